#!/usr/bin/env bash
# bench/xmpp.sh - what the XMPP side costs: login with a big roster, and chat latency.
#
# On the loopback test bed (Prosody), each cusaxd (release build) on a session bus of its own:
#  1. carol, whose roster is empty: time from start to XmppState online, and RSS then;
#  2. alice, whose roster holds BENCH_CONTACTS (default 5000) contacts, written into
#     Prosody's storage beforehand: time to online, time until the Contacts property lists
#     them all (each a D-Bus object), and RSS then; the growth over carol is the roster's;
#  3. once alice has logged out, carol sends bob BENCH_MESSAGES (default 1000) messages, one at a time, through Prosody:
#     from her daemon's SendMessage call to the MessageReceived signal on bob's (both stores
#     write each message to disk before answering). Median, p99 and max.
# Prints a Markdown table.
#
#   bench/xmpp.sh
#   BENCH_CONTACTS=500 BENCH_MESSAGES=100 bench/xmpp.sh    quicker
. "$(dirname "$0")/lib.sh"
contacts=${BENCH_CONTACTS:-5000}
messages=${BENCH_MESSAGES:-1000}
export XMPP_C2S_PORT=${XMPP_C2S_PORT:-24222} XMPP_C2S_TLS_PORT=${XMPP_C2S_TLS_PORT:-24223}
testbed_up prosody

# alice's roster, in Prosody's own storage format (data/<host>/roster/<user>.dat).
mkdir -p "$dir/prosody/data/localhost/roster"
awk -v n="$contacts" 'BEGIN {
  print "return {"; print "\t[false] = { [\"version\"] = 1; };"
  for (i = 1; i <= n; i++)
    printf "\t[\"contact%d@localhost\"] = { [\"subscription\"] = \"both\"; [\"groups\"] = { [\"Bench\"] = true; }; [\"name\"] = \"Contact %d\"; };\n", i, i
  print "};" }' >"$dir/prosody/data/localhost/roster/alice.dat"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
prop() { # prop ADDRESS INTERFACE NAME
  busctl --address="$1" get-property org.cusax.Cusax1 /org/cusax/Cusax1 "org.cusax.Cusax1.$2" "$3" 2>/dev/null || true
}

# start USER: a session bus and a cusaxd for USER; sets $address, $daemon and $started (ms).
start() {
  local home=$dir/$1
  session_bus "$home"
  cat >"$home/config.toml" <<CONF
[xmpp]
jid = "$1@localhost"
password = "secret-$1"
server = "127.0.0.1:$XMPP_PORT"
[tls]
extra_ca = "$XMPP_CA_FILE"
CONF
  start_cusaxd "$home"
}

# wait_online: ms from start until XmppState is online
wait_online() {
  for _ in $(seq 3000); do
    [ "$(prop "$address" Daemon XmppState)" = 's "online"' ] && { echo $(( $(now_ms) - started )); return; }
    sleep 0.005
  done
  echo "cusaxd did not come online" >&2; exit 1
}

# wait_contacts N: ms from start until the Contacts property lists N objects
wait_contacts() {
  for _ in $(seq 1200); do
    local listed; listed=$(prop "$address" Contacts Contacts | cut -d' ' -f2)
    [ "${listed:-0}" = "$1" ] && { echo $(( $(now_ms) - started )); return; }
    sleep 0.05
  done
  echo "the roster did not load" >&2; exit 1
}

start carol
carol_online=$(wait_online)
sleep 1
carol_rss=$(rss_kib "$daemon")
carol_address=$address

start alice
alice_online=$(wait_online)
alice_roster=$(wait_contacts "$contacts")
sleep 1
alice_rss=$(rss_kib "$daemon")
# alice logs out first: her 5,000-contact session makes Prosody's own pauses (a bigger Lua
# heap to collect) the p99 of the latency below (20.5 ms with her online, 7.4 ms without).
stop "$daemon"

start bob
wait_online >/dev/null
figures=$("$bin/chat-latency" "$carol_address" "$address" bob@localhost "$messages")
read -r median p99 max <<<"$figures"

cores=$(nproc)
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
cat <<TABLE
XMPP on Prosody 0.12 over loopback, $(date -u +%Y-%m-%d), $cores cores, release build:

| measure | figure |
|---|---|
| login to online, empty roster | $carol_online ms |
| login to online, $contacts contacts | $alice_online ms |
| login to all $contacts contacts on D-Bus | $alice_roster ms |
| RSS online, empty roster | $(mib "$carol_rss") MiB |
| RSS online, $contacts contacts | $(mib "$alice_rss") MiB (+$(mib $(( alice_rss - carol_rss ))) MiB) |
| chat message, SendMessage to MessageReceived, median of $messages | $median ms |
| same, p99 / max | $p99 ms / $max ms |
TABLE
