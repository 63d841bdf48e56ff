#!/usr/bin/env bash
# bench/call-setup.sh - how fast an endpoint answers: call set-up time through Kamailio,
# cusaxd side by side with baresip in one run.
#
# On the loopback test bed (Kamailio), a sipp caller makes BENCH_CALLS (default 50) calls,
# one at a time, to "bob" through Kamailio (digest auth on the INVITE, PCMU offer), and times
# each from the authenticated INVITE leaving sipp to the 200 arriving: Kamailio's two hops
# plus bob's work (parse, SDP answer, media sockets, 180, 200). Bob is first a cusaxd
# auto-answering through D-Bus (tests' answer-calls: it answers each incoming call object as
# it appears, as a desktop shell would; cusaxd itself never answers on its own), then a stock
# baresip with answermode=auto. Each call is hung up by sipp 300 ms after the 200.
# Prints a Markdown table: median, p90 and max for each, and the ratio of the medians.
#
#   bench/call-setup.sh                builds cusaxd (release) first
#   BENCH_CALLS=10 bench/call-setup.sh
. "$(dirname "$0")/lib.sh"
calls=${BENCH_CALLS:-50}
export SIP_PORT=${SIP_PORT:-27060} SIP_TLS_PORT=${SIP_TLS_PORT:-27061} KAM_CTL_PORT=${KAM_CTL_PORT:-27069}
testbed_up kamailio

# sipp_calls NAME: $calls calls from a sipp alice to bob; prints "median p90 max" in ms.
sipp_calls() {
  local work=$dir/sipp-$1
  mkdir -p "$work"
  (cd "$work" && sipp -sf "$OLDPWD/bench/sipp/uac_setup.xml" -s bob -key caller alice -au alice \
    -ap secret-alice -i 127.0.0.1 -p 27080 -mi 127.0.0.1 -mp 27090 -m "$calls" -l 1 \
    -trace_msg -nostdin -timeout 120s -timeout_error -trace_err "$SIP_REGISTRAR" \
    >/dev/null 2>&1) || { echo "sipp's calls to $1 failed: $(cat "$work"/*errors.log 2>/dev/null)" >&2; exit 1; }
  # sipp's own response times count in jiffies (4 ms here); its message trace stamps each
  # message in microseconds.
  bench/sipp/setup-times.py "$work"/*_messages.log
}

home=$dir/bob
session_bus "$home"
sox -n -r 8000 -c 1 -b 16 "$home/tone.wav" synth 10 sine 1000 vol 0.5
cat >"$home/config.toml" <<CONF
[sip]
aor = "sip:bob@127.0.0.1"
proxy = "sip:$SIP_REGISTRAR"
transport = "udp"
password = "secret-bob"
[media]
input = "file:$home/tone.wav"
output = "null"
CONF
start_cusaxd "$home"
wait_registered
"$bin/answer-calls" "$address" >"$dir/answer-calls.log" 2>&1 &
answerer=$!
pids+=("$answerer")
for _ in $(seq 200); do grep -q ready "$dir/answer-calls.log" && break; sleep 0.01; done
figures=$(sipp_calls cusaxd)
read -r cusaxd_median cusaxd_p90 cusaxd_max cusaxd_n <<<"$figures"
stop "$answerer" "$daemon"

start_baresip bob 27102 27200-27219 27441 PCMU
figures=$(sipp_calls baresip)
read -r baresip_median baresip_p90 baresip_max baresip_n <<<"$figures"

echo "| call set-up, INVITE to 200 through Kamailio ($cusaxd_n / $baresip_n calls) | median | p90 | max |"
echo "|---|---|---|---|"
echo "| cusaxd, answered over D-Bus | $cusaxd_median ms | $cusaxd_p90 ms | $cusaxd_max ms |"
echo "| baresip, answermode=auto | $baresip_median ms | $baresip_p90 ms | $baresip_max ms |"
echo "| ratio of the medians cusaxd / baresip | $(ratio "$cusaxd_median" "$baresip_median") | | |"
echo
echo "($(nproc) cores, $(date -u +%Y-%m-%d), baresip $(baresip_version))"
