#!/usr/bin/env bash
# bench/call-cpu.sh - what one call costs cusaxd and baresip, side by side in one run.
#
# On the loopback test bed (Kamailio, a private session bus), a baresip "bob" answers every
# call. For each codec (G.711 µ-law, then Opus), first cusaxd and then a stock baresip call
# bob the same way: audio from a WAV file, what comes back played to nowhere (cusaxd
# `output = "null"`, baresip's paced `aubridge`), no recording. Once the call has run for
# 12 s, the caller's CPU time (utime + stime), context switches and RSS are read from /proc
# for BENCH_SECONDS (default 30); context switches are all threads'. Prints a Markdown table with the ratio cusaxd / baresip.
#
#   bench/call-cpu.sh            builds cusaxd (release) first
#   BENCH_CODECS=opus BENCH_SECONDS=10 bench/call-cpu.sh   one codec, shorter
. "$(dirname "$0")/lib.sh"
seconds=${BENCH_SECONDS:-30}
# tokio's helper threads (DNS, TLS set-up) end 10 s after their last task, taking their
# count of context switches with them: measure from 12 s into the call.
warmup=12
export SIP_PORT=${SIP_PORT:-25060} SIP_TLS_PORT=${SIP_TLS_PORT:-25061} KAM_CTL_PORT=${KAM_CTL_PORT:-25069}
testbed_up kamailio
ctrl() { tests/testbed/baresip/baresip_ctrl.py --port "$@" >/dev/null; }

tick=$(getconf CLK_TCK)
# sample PID: "cpu_ticks context_switches rss_mib", all threads
sample() {
  local stat; stat=$(cut -d' ' -f14,15 "/proc/$1/stat")
  echo "$(( ${stat% *} + ${stat#* } )) $(switches "$1") $(rss_mib "$1")"
}
# measure PID: "cpu_percent switches_per_s rss_mib" over $seconds
measure() {
  sleep "$warmup"
  local first last
  first=$(sample "$1")
  read -r t0 c0 _ <<<"$first"
  sleep "$seconds"
  last=$(sample "$1")
  read -r t1 c1 rss <<<"$last"
  awk -v t="$((t1 - t0))" -v c="$((c1 - c0))" -v s="$seconds" -v hz="$tick" \
    'BEGIN { printf "%.2f %.1f ", 100 * t / hz / s, c / s }'
  echo "$rss"
}

rows=()
for codec in ${BENCH_CODECS:-pcmu opus}; do
  baresip_codecs=PCMU; [ $codec = opus ] && baresip_codecs=opus/48000/2
  rate=8000; [ $codec = opus ] && rate=48000
  start_baresip bob 25102 25200-25219 25441 "$baresip_codecs"; bob=$baresip

  # cusaxd calls bob.
  home=$dir/alice-$codec
  session_bus "$home"
  # cusaxd loops its source file and keeps it in memory: 10 s is enough (baresip's aufile
  # reads from disk and ends the call at the end of the file, hence its 120 s).
  sox -n -r "$rate" -c 1 -b 16 "$home/tone.wav" synth 10 sine 1000 vol 0.5
  cat >"$home/config.toml" <<CONF
[sip]
aor = "sip:alice@127.0.0.1"
proxy = "sip:$SIP_REGISTRAR"
password = "secret-alice"
[media]
codecs = ["$codec"]
input = "file:$home/tone.wav"
output = "null"
CONF
  start_cusaxd "$home"; alice=$daemon
  wait_registered
  ctl() { DBUS_SESSION_BUS_ADDRESS=$address "$bin/cusaxctl" "$@"; }
  ctl call sip:bob@127.0.0.1 >/dev/null
  for _ in $(seq 200); do ctl calls | grep -q " active " && break; sleep 0.05; done
  figures=$(measure "$alice")
  read -r cusaxd_cpu cusaxd_ctx cusaxd_rss <<<"$figures"
  ctl calls | grep -q " active " || { echo "the cusaxd call did not last" >&2; exit 1; }
  ctl hangup
  stop "$alice"

  # A stock baresip (carol) calls bob.
  start_baresip carol 25106 25300-25319 25443 "$baresip_codecs"; carol=$baresip
  ctrl 25443 dial sip:bob@127.0.0.1 --wait CALL_ESTABLISHED --timeout 10
  figures=$(measure "$carol")
  read -r baresip_cpu baresip_ctx baresip_rss <<<"$figures"
  ctrl 25443 hangup --wait CALL_CLOSED --timeout 10 || true
  stop "$carol" "$bob"

  name="G.711 µ-law"; [ $codec = opus ] && name="Opus 48 kHz"
  rows+=("| $name: CPU | $cusaxd_cpu % | $baresip_cpu % | $(ratio "$cusaxd_cpu" "$baresip_cpu") |")
  rows+=("| $name: context switches | $cusaxd_ctx /s | $baresip_ctx /s | $(ratio "$cusaxd_ctx" "$baresip_ctx") |")
  rows+=("| $name: RSS | $cusaxd_rss MiB | $baresip_rss MiB | $(ratio "$cusaxd_rss" "$baresip_rss") |")
done

echo "| in a call (the caller) | cusaxd | baresip | cusaxd / baresip |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "($(nproc) cores, $seconds s per measurement, $(date -u +%Y-%m-%d), baresip $(baresip_version))"
