#!/usr/bin/env python3
"""setup-times.py MESSAGES_LOG: call set-up times from a sipp -trace_msg log of
uac_setup.xml, each from the authenticated INVITE (CSeq 2) sent to the first 200 for it
received, by Call-ID. Prints "median p90 max count" in ms."""
import re
import sys
from datetime import datetime

ENTRY = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n(\S+ message (sent|received))", re.M)


def header(message, name):
    found = re.search(rf"^{name}:\s*(.+?)\s*$", message, re.M | re.I)
    return found.group(1) if found else None


def main():
    text = open(sys.argv[1], encoding="latin-1").read()
    marks = list(ENTRY.finditer(text))
    sent, answered = {}, {}
    for mark, following in zip(marks, marks[1:] + [None]):
        stamp = datetime.strptime(mark.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        message = text[mark.end() : following.start() if following else len(text)]
        call, cseq = header(message, "Call-ID"), header(message, "CSeq")
        if cseq != "2 INVITE" or call is None:
            continue
        first_line = message.split(":", 1)[1].lstrip().split("\n", 1)[0]
        if mark.group(3) == "sent" and first_line.startswith("INVITE "):
            sent.setdefault(call, stamp)
        elif mark.group(3) == "received" and first_line.startswith("SIP/2.0 200"):
            answered.setdefault(call, stamp)
    times = sorted((answered[c] - sent[c]) * 1000 for c in sent if c in answered)
    if not times:
        sys.exit("no call was answered")
    n = len(times)
    median = times[(n - 1) // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
    p90 = times[min(n - 1, -(-9 * n // 10) - 1)]
    print(f"{median:.1f} {p90:.1f} {times[-1]:.1f} {n}")


main()
