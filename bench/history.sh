#!/usr/bin/env bash
# bench/history.sh - History.Query over a big history: a page of 50 out of BENCH_HISTORY
# (default 1,000,000) messages.
#
# cusaxd (release) logs alice in to the test bed's Prosody once, so that it creates its
# store, and stops. Then BENCH_HISTORY messages are written into that store with sqlite3:
# one a minute from 2024-01-01, with 100 peers taking turns (10,000 each for a million), and
# 60 more from a "rare" peer in the first hour, so that her page lies under all the others.
# cusaxd starts again, on the big store, logs in, and a D-Bus client (tests' history-query)
# times BENCH_QUERIES (default 200) calls of each kind, one at a time: D-Bus call to reply.
# Prints a Markdown table.
#
#   bench/history.sh
#   BENCH_HISTORY=100000 bench/history.sh
. "$(dirname "$0")/lib.sh"
messages=${BENCH_HISTORY:-1000000}
queries=${BENCH_QUERIES:-200}
export XMPP_C2S_PORT=${XMPP_C2S_PORT:-28222} XMPP_C2S_TLS_PORT=${XMPP_C2S_TLS_PORT:-28223}
testbed_up prosody

home=$dir/alice
session_bus "$home"
cat >"$home/config.toml" <<CONF
[xmpp]
jid = "alice@localhost"
password = "secret-alice"
server = "127.0.0.1:$XMPP_PORT"
[tls]
extra_ca = "$XMPP_CA_FILE"
CONF
wait_online() {
  for _ in $(seq 1000); do
    busctl --address="$address" get-property org.cusax.Cusax1 /org/cusax/Cusax1 org.cusax.Cusax1.Daemon \
      XmppState 2>/dev/null | grep -q '"online"' && return 0
    sleep 0.01
  done
  echo "cusaxd did not come online: $(cat "$home/cusaxd.log")" >&2
  exit 1
}
start_cusaxd "$home"
wait_online
stop "$daemon"
store=$home/cusax/history.sqlite
[ -s "$store" ] || { echo "cusaxd made no store at $store" >&2; exit 1; }

start_ms=1704067200000 # 2024-01-01
t0=$(now_ms)
sqlite3 "$store" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $messages)
INSERT INTO messages (uid, account, peer, direction, thread, body, at_ms, at_s, status)
SELECT 'bench-' || i, 'alice@localhost', 'contact' || (i % 100) || '@localhost',
       CASE WHEN i % 2 THEN 'in' ELSE 'out' END, 'thread-' || (i % 100),
       'message number ' || i || ', about as long as a line of chat usually is',
       $start_ms + i * 60000, ($start_ms + i * 60000) / 1000,
       CASE WHEN i % 2 THEN 'received' ELSE 'delivered' END
FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60)
INSERT INTO messages (uid, account, peer, direction, thread, body, at_ms, at_s, status)
SELECT 'rare-' || i, 'alice@localhost', 'rare@localhost', 'in', 'thread-rare', 'a rare one ' || i,
       $start_ms + i * 1000, ($start_ms + i * 1000) / 1000, 'received'
FROM n;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
fill_ms=$(( $(now_ms) - t0 ))
size_mib=$(du -m "$store" | cut -f1)

start_cusaxd "$home"
wait_online
middle=$(( start_ms + messages / 2 * 60000 ))
query() { "$bin/history-query" "$address" "$queries" "$@"; }
row() { # row LABEL FILTER...
  local label=$1; shift
  local figures
  figures=$(query "$@")
  read -r median p90 max rows <<<"$figures"
  echo "| $label | $rows | $median ms | $p90 ms | $max ms |"
}

echo "History.Query over $messages messages (+60 of a rare peer), $size_mib MiB on disk (filled in $fill_ms ms), $queries calls each:"
echo
echo "| page | messages | median | p90 | max |"
echo "|---|---|---|---|---|"
row "newest 50 of all" limit=50
row "newest 50 with one peer (1 % of the history)" limit=50 peer=contact7@localhost
row "50 with one peer, paging back to the middle" limit=50 peer=contact7@localhost before=$middle
row "a rare peer's 60, the oldest of all" limit=50 peer=rare@localhost
row "newest 500 of all (the largest page)" limit=500
echo
echo "($(nproc) cores, $(date -u +%Y-%m-%d), SQLite $(sqlite3 --version | cut -d' ' -f1), release build)"
