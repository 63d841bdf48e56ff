#!/usr/bin/env bash
# bench/call-cpu.sh - what one call costs cusaxd and baresip, side by side in one run.
#
# On the loopback test bed (Kamailio, a private session bus), a baresip "bob" answers every
# call. For each codec (G.711 µ-law, then Opus), first cusaxd and then a stock baresip call
# bob the same way: audio from a WAV file, what comes back played to nowhere (cusaxd
# `output = "null"`, baresip's paced `aubridge`), no recording. Once the call has run for
# 3 s, the caller's CPU time (utime + stime), context switches and RSS are read from /proc
# for BENCH_SECONDS (default 30). Prints a Markdown table with the ratio cusaxd / baresip.
#
#   bench/call-cpu.sh            builds cusaxd (release) first
#   BENCH_CODECS=opus BENCH_SECONDS=10 bench/call-cpu.sh   one codec, shorter
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${BENCH_SECONDS:-30}
warmup=3
cargo build --release --bins --locked -q
bin=$PWD/target/release

dir=$(mktemp -d "${TMPDIR:-/tmp}/cusax-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  tests/testbed/testbed.sh down "$dir" >/dev/null 2>&1
}
trap cleanup EXIT
export SIP_PORT=${SIP_PORT:-25060} SIP_TLS_PORT=${SIP_TLS_PORT:-25061} KAM_CTL_PORT=${KAM_CTL_PORT:-25069}
TESTBED_SERVICES="kamailio dbus" tests/testbed/testbed.sh up "$dir" >/dev/null
. "$dir/env.sh"
ctrl() { tests/testbed/baresip/baresip_ctrl.py --port "$@" >/dev/null; }

tick=$(getconf CLK_TCK)
# sample PID: "cpu_ticks context_switches rss_kib"
sample() {
  local stat; stat=$(cut -d' ' -f14,15 "/proc/$1/stat")
  local ctx; ctx=$(awk '/ctxt_switches/ {n += $2} END {print n}' "/proc/$1/status")
  local rss; rss=$(awk '/^VmRSS/ {print $2}' "/proc/$1/status")
  echo "$(( ${stat% *} + ${stat#* } )) $ctx $rss"
}
# measure PID: "cpu_percent switches_per_s rss_mib" over $seconds
measure() {
  sleep "$warmup"
  read -r t0 c0 _ <<<"$(sample "$1")"
  sleep "$seconds"
  read -r t1 c1 rss <<<"$(sample "$1")"
  awk -v t="$((t1 - t0))" -v c="$((c1 - c0))" -v r="$rss" -v s="$seconds" -v hz="$tick" \
    'BEGIN { printf "%.2f %.1f %.1f", 100 * t / hz / s, c / s, r / 1024 }'
}

start_baresip() { # start_baresip USER SIP_PORT RTP_PORTS CTRL_PORT CODECS [SNDFILE]
  local user=$1 rate=8000 channels=1
  [[ $5 == opus* ]] && rate=48000 channels=2
  BARESIP_OUTBOUND="sip:127.0.0.1:$SIP_PORT" BARESIP_CODECS=$5 BARESIP_SNDFILE=${6:-no} \
    tests/testbed/baresip/mkconf.sh "$dir/$user" "$user" "secret-$user" "$2" "$3" "$4" tone.wav >/dev/null
  sox -n -r "$rate" -c "$channels" -b 16 "$dir/$user/tone.wav" synth 120 sine 1000 vol 0.5
  ( cd "$dir/$user" && exec baresip -f . ) </dev/null >"$dir/$user/baresip.log" 2>&1 &
  pids+=($!)
  started=$!
  for _ in $(seq 200); do grep -q "200 OK" "$dir/$user/baresip.log" && break; sleep 0.05; done
}

rows=()
for codec in ${BENCH_CODECS:-pcmu opus}; do
  baresip_codecs=PCMU; [ $codec = opus ] && baresip_codecs=opus/48000/2
  rate=8000; [ $codec = opus ] && rate=48000
  start_baresip bob 25102 25200-25219 25441 "$baresip_codecs"; bob=$started

  # cusaxd calls bob.
  mkdir -p "$dir/alice"
  # cusaxd loops its source file and keeps it in memory: 10 s is enough (baresip's aufile
  # reads from disk and ends the call at the end of the file, hence its 120 s).
  sox -n -r "$rate" -c 1 -b 16 "$dir/alice/tone.wav" synth 10 sine 1000 vol 0.5
  cat >"$dir/alice/config.toml" <<CONF
[sip]
aor = "sip:alice@127.0.0.1"
proxy = "sip:127.0.0.1:$SIP_PORT"
password = "secret-alice"
[media]
codecs = ["$codec"]
input = "file:$dir/alice/tone.wav"
output = "null"
CONF
  chmod 600 "$dir/alice/config.toml"
  XDG_DATA_HOME="$dir/alice" "$bin/cusaxd" --config "$dir/alice/config.toml" 2>"$dir/alice/cusaxd.log" &
  alice=$!; pids+=("$alice")
  for _ in $(seq 200); do "$bin/cusaxctl" status --json 2>/dev/null | grep -q '"SipState":"registered"' && break; sleep 0.05; done
  "$bin/cusaxctl" call sip:bob@127.0.0.1 >/dev/null
  for _ in $(seq 200); do "$bin/cusaxctl" calls | grep -q " active " && break; sleep 0.05; done
  read -r cusaxd_cpu cusaxd_ctx cusaxd_rss <<<"$(measure "$alice")"
  "$bin/cusaxctl" calls | grep -q " active " || { echo "the cusaxd call did not last" >&2; exit 1; }
  "$bin/cusaxctl" hangup
  kill -TERM "$alice"; wait "$alice" || true

  # A stock baresip (carol) calls bob.
  start_baresip carol 25106 25300-25319 25443 "$baresip_codecs"; carol=$started
  ctrl 25443 dial sip:bob@127.0.0.1 --wait CALL_ESTABLISHED --timeout 10
  read -r baresip_cpu baresip_ctx baresip_rss <<<"$(measure "$carol")"
  ctrl 25443 hangup --wait CALL_CLOSED --timeout 10 || true
  kill -TERM "$carol" "$bob"; wait "$carol" "$bob" 2>/dev/null || true

  ratio=$(awk -v a="$cusaxd_cpu" -v b="$baresip_cpu" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  name="G.711 µ-law"; [ $codec = opus ] && name="Opus 48 kHz"
  rows+=("| $name | $cusaxd_cpu % | $baresip_cpu % | $ratio | $cusaxd_ctx | $baresip_ctx | $cusaxd_rss MiB | $baresip_rss MiB |")
done

echo "| call | cusaxd CPU | baresip CPU | ratio | cusaxd switches/s | baresip switches/s | cusaxd RSS | baresip RSS |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "($(nproc) cores, $seconds s per measurement, $(date -u +%Y-%m-%d), baresip $(dpkg-query -W -f '${Version}' baresip-core 2>/dev/null))"
