#!/usr/bin/env bash
# bench/idle.sh - what an idle endpoint costs, cusaxd side by side with baresip, and how long
# cusaxd takes to start.
#
# On the loopback test bed (Prosody, Kamailio), each on a session bus of its own:
#  1. cusaxd with both accounts (SIP over UDP, XMPP): from exec to "ready on the session
#     bus" (READY), to SIP registered, to XMPP online;
#  2. cusaxd with the SIP account only;
#  3. a stock baresip 1.0 registered the same way (UDP, no media until a call): from exec to
#     the registrar's 200 in its log.
# Then each idles for BENCH_SECONDS (default 60): RSS at the end (/proc VmRSS), and wakeups a
# second (voluntary + involuntary context switches of all its threads over the period).
# Prints a Markdown table with the ratios cusaxd / baresip.
#
#   bench/idle.sh                       builds cusaxd (release) first
#   BENCH_SECONDS=20 bench/idle.sh      shorter
. "$(dirname "$0")/lib.sh"
seconds=${BENCH_SECONDS:-60}
export XMPP_C2S_PORT=${XMPP_C2S_PORT:-26222} XMPP_C2S_TLS_PORT=${XMPP_C2S_TLS_PORT:-26223}
export SIP_PORT=${SIP_PORT:-26060} SIP_TLS_PORT=${SIP_TLS_PORT:-26061} KAM_CTL_PORT=${KAM_CTL_PORT:-26069}
testbed_up prosody kamailio

# idle PID: "rss_mib wakeups_per_s" after $seconds.
idle() {
  local s0 s1
  s0=$(switches "$1"); sleep "$seconds"; s1=$(switches "$1")
  echo "$(rss_mib "$1") $(awk -v d="$((s1 - s0))" -v s="$seconds" 'BEGIN { printf "%.2f", d / s }')"
}

# cusaxd USER WITH_XMPP: a bus and a cusaxd; sets $daemon, $address and the timings
# $ready_ms, $registered_ms, $online_ms (from exec).
cusaxd() {
  local user=$1 home=$dir/$1
  session_bus "$home"
  {
    printf '[sip]\naor = "sip:%s@127.0.0.1"\nproxy = "sip:%s"\ntransport = "udp"\npassword = "secret-%s"\n' \
      "$user" "$SIP_REGISTRAR" "$user"
    [ "$2" = yes ] && printf '[xmpp]\njid = "%s@localhost"\npassword = "secret-%s"\nserver = "127.0.0.1:%s"\n[tls]\nextra_ca = "%s"\n' \
      "$user" "$user" "$XMPP_PORT" "$XMPP_CA_FILE"
  } >"$home/config.toml"
  start_cusaxd "$home"
  local t0=$started
  # Each milestone as its log line appears, polled like baresip's (bench/lib.sh).
  ready_ms=""; registered_ms=""; online_ms=""
  for _ in $(seq 2000); do
    [ -z "$ready_ms" ] && grep -q "ready on the session bus" "$home/cusaxd.log" && ready_ms=$(( $(now_ms) - t0 ))
    [ -z "$registered_ms" ] && grep -q "sip: registered" "$home/cusaxd.log" && registered_ms=$(( $(now_ms) - t0 ))
    [ -z "$online_ms" ] && grep -q "xmpp: online" "$home/cusaxd.log" && online_ms=$(( $(now_ms) - t0 ))
    [ -n "$ready_ms" ] && [ -n "$registered_ms" ] && { [ "$2" = no ] || [ -n "$online_ms" ]; } && return 0
    sleep 0.005
  done
  echo "cusaxd for $user did not come up: $(cat "$home/cusaxd.log")" >&2
  exit 1
}

cusaxd alice yes
full=$daemon; full_ready=$ready_ms; full_registered=$registered_ms; full_online=$online_ms
cusaxd bob no
sip_only=$daemon; sip_ready=$ready_ms; sip_registered=$registered_ms

start_baresip carol 26102 26200-26219 26441 PCMU 1
baresip_registered=$(( $(now_ms) - started ))

# All three idle at the same time, measured over the same period, from 12 s after the last
# start: tokio's helper threads (DNS, TLS set-up) end 10 s after their last task, and a thread
# that ends takes its count of context switches with it.
sleep 12
idle "$full" >"$dir/full.idle" & m1=$!
idle "$sip_only" >"$dir/sip.idle" & m2=$!
idle "$baresip" >"$dir/baresip.idle" & m3=$!
wait "$m1" "$m2" "$m3"
read -r full_rss full_wake <"$dir/full.idle"
read -r sip_rss sip_wake <"$dir/sip.idle"
read -r bare_rss bare_wake <"$dir/baresip.idle"

echo "| idle endpoint | RSS | vs baresip | wakeups/s | vs baresip |"
echo "|---|---|---|---|---|"
echo "| cusaxd, SIP registered and XMPP online | $full_rss MiB | $(ratio "$full_rss" "$bare_rss") | $full_wake | $(ratio "$full_wake" "$bare_wake") |"
echo "| cusaxd, SIP registered | $sip_rss MiB | $(ratio "$sip_rss" "$bare_rss") | $sip_wake | $(ratio "$sip_wake" "$bare_wake") |"
echo "| baresip, SIP registered | $bare_rss MiB | 1 | $bare_wake | 1 |"
echo
echo "| start-up (from exec) | cusaxd, both accounts | cusaxd, SIP only | baresip | SIP only vs baresip |"
echo "|---|---|---|---|---|"
echo "| ready on the session bus (READY) | $full_ready ms | $sip_ready ms | - | - |"
echo "| SIP registered | $full_registered ms | $sip_registered ms | $baresip_registered ms | $(ratio "$sip_registered" "$baresip_registered") |"
echo "| XMPP online | $full_online ms | - | - | - |"
echo
echo "($(nproc) cores, $seconds s idle, $(date -u +%Y-%m-%d), baresip $(baresip_version))"
