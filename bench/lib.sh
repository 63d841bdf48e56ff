# bench/lib.sh - what the benchmark scripts share; sourced by each, never run.
#
# Builds the release binaries ($bin), makes a fresh work folder ($dir), and on exit stops
# every process listed in $pids and the test bed started in $dir, and deletes $dir (unless
# BENCH_KEEP=1). A figure is read with `out=$(...)` first, so that a failing measurement
# stops the script (set -e does not see into `read <<<"$(...)"`). Each script runs on its own
# ports (in 24000-28999, below the kernel's ephemeral range) so that none meets another's
# leftovers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bins --locked -q
bin=$PWD/target/release
dir=$(mktemp -d "${TMPDIR:-/tmp}/cusax-bench.XXXXXX")
pids=()
bench_cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  tests/testbed/testbed.sh down "$dir" >/dev/null 2>&1 || true
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
}
# stop PID...: stop those now (TERM, wait), and forget them, so that the cleanup never signals
# a number the system has given to another process since.
stop() {
  local pid kept=()
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do [[ " $* " == *" $pid "* ]] || kept+=("$pid"); done
  pids=("${kept[@]}")
}
trap bench_cleanup EXIT

now_ms() { date +%s%3N; }
# ratio A B: A / B to two places, "n/a" when B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# switches PID: context switches (voluntary + involuntary) of all of PID's threads so far.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n}'; }
# rss_mib PID: resident memory now.
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
baresip_version() { dpkg-query -W -f '${Version}' baresip-core 2>/dev/null; }

# testbed_up SERVICE...: the test bed's servers on loopback, its env.sh sourced.
testbed_up() {
  TESTBED_SERVICES="$*" tests/testbed/testbed.sh up "$dir" >/dev/null
  . "$dir/env.sh"
}

# session_bus HOME: a private session bus whose socket is HOME/bus; sets $address.
session_bus() {
  mkdir -p "$1"
  dbus-daemon --session --address="unix:path=$1/bus" --nofork --nopidfile >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [ -S "$1/bus" ] && break; sleep 0.01; done
  address="unix:path=$1/bus"
}

# start_cusaxd HOME: cusaxd with HOME/config.toml (made 0600 here) and HOME as its data
# folder, on the bus $address, logging to HOME/cusaxd.log; sets $daemon and $started (ms).
start_cusaxd() {
  chmod 600 "$1/config.toml"
  started=$(now_ms)
  DBUS_SESSION_BUS_ADDRESS=$address XDG_DATA_HOME=$1 "$bin/cusaxd" --config "$1/config.toml" \
    </dev/null >/dev/null 2>"$1/cusaxd.log" &
  daemon=$!
  pids+=("$daemon")
}

# wait_registered: until the cusaxd on $address says SipState registered.
wait_registered() {
  for _ in $(seq 400); do
    DBUS_SESSION_BUS_ADDRESS=$address "$bin/cusaxctl" status --json 2>/dev/null \
      | grep -q '"SipState":"registered"' && return 0
    sleep 0.025
  done
  echo "cusaxd did not register" >&2
  exit 1
}

# start_baresip USER SIP_PORT RTP_PORTS CTRL_PORT CODECS [SOURCE_SECONDS]: a stock baresip
# (tests/testbed/baresip/mkconf.sh: auto-answer, no recording) registered with the test bed's
# Kamailio, its source a 1 kHz tone at the codec's rate; once registered, sets $baresip and
# $started (ms, at exec).
start_baresip() {
  local user=$1 rate=8000 channels=1
  [[ $5 == opus* ]] && rate=48000 channels=2
  BARESIP_OUTBOUND="sip:$SIP_REGISTRAR" BARESIP_CODECS=$5 BARESIP_SNDFILE=no \
    tests/testbed/baresip/mkconf.sh "$dir/$user" "$user" "secret-$user" "$2" "$3" "$4" tone.wav >/dev/null
  sox -n -r "$rate" -c "$channels" -b 16 "$dir/$user/tone.wav" synth "${6:-120}" sine 1000 vol 0.5
  started=$(now_ms)
  ( cd "$dir/$user" && exec baresip -f . ) </dev/null >"$dir/$user/baresip.log" 2>&1 &
  baresip=$!
  pids+=("$baresip")
  for _ in $(seq 2000); do grep -q "200 OK" "$dir/$user/baresip.log" && return 0; sleep 0.005; done
  echo "baresip $user did not register" >&2
  exit 1
}
