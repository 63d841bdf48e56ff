#!/usr/bin/env python3
"""criterion-table.py DIR: a Markdown table of the criterion results under DIR
(target/criterion): each benchmark's median time and how many fit in a second."""
import json
import pathlib
import sys


def human(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def per_second(ns):
    rate = 1e9 / ns
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.3g} {unit}"
    return f"{rate:.3g}"


rows = []
for found in pathlib.Path(sys.argv[1]).glob("**/new/benchmark.json"):
    name = json.loads(found.read_text())["full_id"]
    median = json.loads((found.parent / "estimates.json").read_text())["median"]["point_estimate"]
    rows.append((name, median))
if not rows:
    sys.exit("no criterion results")
print("| benchmark | median | per second |")
print("|---|---|---|")
for name, median in sorted(rows):
    print(f"| {name} | {human(median)} | {per_second(median)} |")
