#!/usr/bin/env bash
# testbed.sh - start/stop real XMPP + SIP servers on loopback for cusax's tests
# and demo (adapted from the project's shared test bed; its NOTES.md explains
# every choice made here).
#
#   testbed.sh up   [DIR]   create DIR (default $TESTBED_DIR or a new mktemp
#                           dir), write configs, cert, accounts; start the
#                           services named in TESTBED_SERVICES; wait until
#                           each answers; write DIR/env.sh with everything a
#                           test needs
#   testbed.sh down DIR     stop everything started by "up" (by PID)
#   testbed.sh call-demo DIR   two baresip UAs call each other through
#                           kamailio, audio both ways is checked (1 kHz / 440 Hz);
#                           CALL_TRANSPORT=udp|tcp|tls, CALL_SECONDS=4, and the first
#                           of consecutive ports: CALL_SIP_PORT=5102 (4), CALL_CTRL_PORT=4441
#                           (2), CALL_RTP_PORT=10000 (40)
#   testbed.sh sipp-demo DIR   sipp: REGISTER, UAS answer, UAC call + RTP; first of
#                           consecutive ports: SIPP_PORT=5090 (3), SIPP_RTP_PORT=6000 (12)
#   testbed.sh xmpp-demo DIR   slixmpp: message with custom child + presence
#   testbed.sh prosody-stop DIR / prosody-start DIR   stop or start again the test bed's
#                           Prosody alone (its data stays), for tests of a server outage;
#                           ejabberd-stop / ejabberd-start the same for ejabberd
#
# Env (all optional):
#   XMPP_C2S_PORT=5222 XMPP_C2S_TLS_PORT=5223 SIP_PORT=5060 KAM_CTL_PORT=5069
#   TESTBED_SERVICES="prosody kamailio"   any of: prosody kamailio ejabberd pulse dbus
#                       ejabberd: on EJ_C2S_PORT=5232 (STARTTLS) / EJ_C2S_TLS_PORT=5233 (TLS),
#                       an Erlang node named after its port, so test beds can run side by side
#                       pulse: PulseAudio with null sinks (fake sound card)
#                       dbus: a private session bus (DBUS_SESSION_BUS_ADDRESS)
#   TESTBED_SIP_TLS=1   kamailio also listens for SIP over TLS on SIP_TLS_PORT=5061
#                       (needs the Debian package kamailio-tls-modules)
#   TESTBED_SIP_GRUU=1  kamailio hands out GRUUs (RFC 5627), as some providers do
#   TESTBED_SIP_MAX_EXPIRES=N   the longest registration kamailio grants (default 3600 s)
#   TESTBED_USERS="alice bob carol"   password of each is "secret-<name>"
#   TESTBED_PYTHON=...  python with slixmpp (default: .venv next to this file)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}; dir=${2:-${TESTBED_DIR:-}}
users=${TESTBED_USERS:-alice bob carol}
c2s=${XMPP_C2S_PORT:-5222}; c2s_tls=${XMPP_C2S_TLS_PORT:-5223}
ej_c2s=${EJ_C2S_PORT:-5232}; ej_tls=${EJ_C2S_TLS_PORT:-5233}
sip=${SIP_PORT:-5060}; sip_tls=${SIP_TLS_PORT:-5061}; kctl=${KAM_CTL_PORT:-5069}
services=" ${TESTBED_SERVICES:-prosody kamailio} "
py=${TESTBED_PYTHON:-$here/.venv/bin/python}
wanted() { [[ $services == *" $1 "* ]]; }

now_ms() { date +%s%3N; }
log() { echo "testbed: $*" >&2; }
die() { log "$*"; exit 1; }
die_log() {    # die_log FILE MESSAGE : die, showing the end of the service's own log
  local file=$1; shift
  log "$* (end of $file:)"
  tail -n 25 "$file" 2>/dev/null | sed 's/^/  | /' >&2
  exit 1
}

start_bg() {   # start_bg NAME WORKDIR CMD... : run CMD in WORKDIR, record PID
  local name=$1 wd=$2; shift 2
  # setsid: each service leads a process group of its own (same PID), so a service that
  # forks workers (kamailio) can be killed whole if it does not stop on SIGTERM.
  ( cd "$wd" && exec setsid "$@" ) >"$dir/logs/$name.out" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name.pid"
}

alive() {      # alive PID : running and not a zombie (kill -0 is true for
  local s      # zombies, and orphans may wait a while to be reaped)
  s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $s != Z* ]]
}

stop_pid() {   # stop_pid PID NAME : TERM, wait up to 5 s, then KILL
  local pid=$1 name=$2 i t0
  alive "$pid" || return 0
  t0=$(now_ms)
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 100); do
    alive "$pid" || { log "stopped $name ($pid) in $(( $(now_ms) - t0 )) ms"; return 0; }
    sleep 0.05
  done
  # The whole group: a forking server's workers must not outlive it and keep its ports.
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  log "killed $name ($pid) and its process group after 5 s"
}

ejabberdctl_() {
  local ej=$dir/ejabberd
  ejabberdctl --config-dir "$ej" --config "$ej/ejabberd.yml" --ctl-config "$ej/ejabberdctl.cfg" \
    --logs "$ej/logs" --spool "$ej/spool" "$@"
}

ejabberd_start() {
  local ej=$dir/ejabberd t0
  t0=$(now_ms)
  if [ ! -d "$ej" ]; then
    mkdir -p "$ej"/{certs,spool,logs}
    cp "$here/ejabberd/"{ejabberd.yml,ejabberdctl.cfg,inetrc} "$ej/"
    sed -i -e "s/C2S_PORT: 5232/C2S_PORT: $ej_c2s/" -e "s/C2S_TLS_PORT: 5233/C2S_TLS_PORT: $ej_tls/" "$ej/ejabberd.yml"
    sed -i -e "s/^ERLANG_NODE=.*/ERLANG_NODE=ejabberd$ej_c2s@localhost/" "$ej/ejabberdctl.cfg"
    cp "$dir/certs/localhost.crt" "$dir/certs/localhost.key" "$ej/certs/"
    chown -R ejabberd:ejabberd "$ej" && chmod 640 "$ej/certs/localhost.key"
  fi
  # epmd (Erlang's name service) is shared by every node on the machine: started on
  # loopback here when missing, and left running (another test bed's node may need it).
  pgrep -x epmd >/dev/null || epmd -daemon -address 127.0.0.1
  start_bg ejabberd "$ej" ejabberdctl --config-dir "$ej" --config "$ej/ejabberd.yml" \
    --ctl-config "$ej/ejabberdctl.cfg" --logs "$ej/logs" --spool "$ej/spool" foreground
  "$here/tools/wait_xmpp.sh" 127.0.0.1 "$ej_c2s" localhost 60 || die_log "$ej/logs/ejabberd.log" "ejabberd not ready"
  # ejabberdctl runs the node through su: the Erlang VM is its own PID, stopped by name.
  pgrep -f "beam.smp.*ejabberd$ej_c2s@localhost" | head -1 >"$dir/pids/ejabberd-beam.pid"
  log "ejabberd ready on 127.0.0.1:$ej_c2s in $(( $(now_ms) - t0 )) ms"
}

prosody_start() {
  start_bg prosody "$dir/prosody" prosody --config ./prosody.cfg.lua -F
  "$here/tools/wait_xmpp.sh" 127.0.0.1 "$c2s" localhost 20 || die_log "$dir/prosody/data/prosody.err" "prosody not ready"
}

up() {
  [ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/testbed.XXXXXX")
  mkdir -p "$dir"/{logs,pids,certs}
  dir=$(cd "$dir" && pwd)
  local t0 t

  # --- self-signed certificate for "localhost" (also valid for 127.0.0.1/::1)
  # A test CA and a server certificate it signs, for "localhost", 127.0.0.1 and ::1. Clients
  # trust ca.crt; a self-signed server certificate would be a CA used as an end entity,
  # which rustls/webpki rightly refuses.
  if [ ! -s "$dir/certs/localhost.crt" ]; then
    local c=$dir/certs
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=cusax test CA" \
      -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null || die "openssl (CA) failed"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$c/localhost.key" -out "$c/localhost.csr" 2>/dev/null || die "openssl (request) failed"
    printf '%s\n' "subjectAltName=DNS:localhost,DNS:conference.localhost,DNS:pubsub.localhost,IP:127.0.0.1,IP:::1" \
      "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" >"$c/localhost.ext"
    openssl x509 -req -in "$c/localhost.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -days 3650 \
      -extfile "$c/localhost.ext" -out "$c/localhost.crt" 2>/dev/null || die "openssl (signing) failed"
    # hashed CA dir for tools that want one (sendxmpp -a DIR, openssl -CApath)
    openssl rehash "$c" 2>/dev/null || true
  fi

  # --- prosody
  if wanted prosody; then
    mkdir -p "$dir/prosody/data" "$dir/prosody/certs"
    cp "$here/prosody/prosody.cfg.lua" "$dir/prosody/"
    cp "$dir/certs/localhost.crt" "$dir/certs/localhost.key" "$dir/prosody/certs/"
    export XMPP_C2S_PORT=$c2s XMPP_C2S_TLS_PORT=$c2s_tls
    for u in $users; do
      (cd "$dir/prosody" && prosodyctl --config ./prosody.cfg.lua register "$u" localhost "secret-$u") \
        >>"$dir/logs/prosodyctl.out" 2>&1 || die "prosodyctl register $u failed"
    done
    t0=$(now_ms)
    prosody_start
    log "prosody ready on 127.0.0.1:$c2s (STARTTLS) / :$c2s_tls (TLS) in $(( $(now_ms) - t0 )) ms"
  fi

  # --- kamailio
  if wanted kamailio; then
    mkdir -p "$dir/kamailio/certs"
    cp "$here/kamailio/kamailio.cfg" "$dir/kamailio/"
    cp "$dir/certs/localhost.crt" "$dir/certs/localhost.key" "$dir/kamailio/certs/"
    local kopts=(-A "SIP_PORT=$sip" -A "SIP_TLS_PORT=$sip_tls" -A "CTL_SOCK=\"tcp:127.0.0.1:$kctl\"")
    [ "${TESTBED_SIP_TLS:-0}" = 1 ] && kopts+=(-A WITH_TLS)
    [ "${TESTBED_SIP_GRUU:-0}" = 1 ] && kopts+=(-A WITH_GRUU)
    [ -n "${TESTBED_SIP_MAX_EXPIRES:-}" ] && kopts+=(-A "MAX_EXPIRES=$TESTBED_SIP_MAX_EXPIRES")
    t0=$(now_ms)
    start_bg kamailio "$dir/kamailio" kamailio -f ./kamailio.cfg -DD -E -m 64 -M 8 "${kopts[@]}"
    "$here/tools/wait_sip.sh" 127.0.0.1 "$sip" udp 20 || die_log "$dir/logs/kamailio.out" "kamailio not ready"
    log "kamailio ready on udp/tcp 127.0.0.1:$sip in $(( $(now_ms) - t0 )) ms"
    for u in $users; do   # users beyond the config's alice/bob/carol
      kamcmd -s "tcp:127.0.0.1:$kctl" htable.sets users "$u" "secret-$u" >/dev/null || die "kamcmd failed"
    done
  fi

  # --- ejabberd (ejabberdctl runs the node as the user ejabberd, so the folder is theirs)
  if wanted ejabberd; then
    ejabberd_start
    local u
    for u in $users; do ejabberdctl_ register "$u" localhost "secret-$u" >/dev/null 2>&1 || die "ejabberd register $u failed"; done
  fi

  # --- optional: PulseAudio with null sinks (paced fake sound card)
  if wanted pulse; then
    mkdir -p "$dir/pulse/run" && chmod 700 "$dir/pulse/run"
    t0=$(now_ms)
    XDG_RUNTIME_DIR="$dir/pulse/run" HOME="$dir/pulse" start_bg pulseaudio "$dir/pulse" \
      pulseaudio -n -F "$here/pulse/pulse.pa" --daemonize=no --exit-idle-time=-1 \
      --disallow-exit --use-pid-file=no --log-target=stderr
    for _ in $(seq 100); do XDG_RUNTIME_DIR="$dir/pulse/run" pactl info >/dev/null 2>&1 && break; sleep 0.05; done
    XDG_RUNTIME_DIR="$dir/pulse/run" pactl info >/dev/null 2>&1 || die "pulseaudio not ready"
    log "pulseaudio ready in $(( $(now_ms) - t0 )) ms"
  fi

  # --- optional: private D-Bus session bus
  if wanted dbus; then
    mkdir -p "$dir/dbus"
    start_bg dbus "$dir/dbus" dbus-daemon --session --address="unix:path=$dir/dbus/bus" \
      --nofork --nopidfile --print-address=1
    for _ in $(seq 100); do [ -s "$dir/logs/dbus.out" ] && break; sleep 0.02; done
    [ -s "$dir/logs/dbus.out" ] || die "dbus-daemon not ready"
  fi

  cat >"$dir/env.sh" <<ENV
export TESTBED_DIR='$dir'
export XMPP_DOMAIN=localhost XMPP_HOST=127.0.0.1 XMPP_PORT=$c2s XMPP_TLS_PORT=$c2s_tls
export XMPP_CA_FILE='$dir/certs/ca.crt' XMPP_CA_DIR='$dir/certs' CA_FILE='$dir/certs/ca.crt'
export SIP_REGISTRAR=127.0.0.1:$sip SIP_TLS_PORT=$sip_tls SIP_DOMAIN=127.0.0.1 KAMAILIO_CTL=tcp:127.0.0.1:$kctl
export TESTBED_USERS='$users'   # password: secret-<user>
ENV
  wanted pulse && echo "export XDG_RUNTIME_DIR='$dir/pulse/run' PULSE_SERVER='unix:$dir/pulse/run/pulse/native'" >>"$dir/env.sh"
  wanted dbus && echo "export DBUS_SESSION_BUS_ADDRESS='$(head -1 "$dir/logs/dbus.out")'" >>"$dir/env.sh"
  echo "$dir"
}

down() {
  [ -n "$dir" ] && [ -d "$dir/pids" ] || die "usage: testbed.sh down DIR"
  local f name
  for f in "$dir"/pids/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    stop_pid "$(cat "$f")" "$name"
    rm -f "$f"
  done
}

call_demo() {
  [ -f "$dir/env.sh" ] || die "run 'testbed.sh up' first"
  local b=$dir/baresip secs=${CALL_SECONDS:-4} rc=0 u
  rm -rf "$b"; mkdir -p "$b"
  local pa=${CALL_SIP_PORT:-5102}   # alice: pa (+1 TLS), bob: pa+2 (+3 TLS)
  local ctl_a=${CALL_CTRL_PORT:-4441}; local ctl_b=$((ctl_a + 1))
  local rtp=${CALL_RTP_PORT:-10000}   # alice: rtp..rtp+19, bob: rtp+20..rtp+39
  export BARESIP_TRANSPORT=${CALL_TRANSPORT:-udp} BARESIP_CAFILE=$dir/certs/ca.crt
  local proxy_port=$sip; [ "$BARESIP_TRANSPORT" = tls ] && proxy_port=$sip_tls
  export BARESIP_OUTBOUND="sip:127.0.0.1:$proxy_port"
  "$here/baresip/mkconf.sh" "$b/alice" alice secret-alice "$pa" "$rtp-$((rtp + 19))" "$ctl_a" tone1k.wav >/dev/null || return 1
  "$here/baresip/mkconf.sh" "$b/bob" bob secret-bob "$((pa + 2))" "$((rtp + 20))-$((rtp + 39))" "$ctl_b" tone440.wav >/dev/null || return 1
  # sources must outlast the call: baresip 1.0 hangs up at end of file
  sox -n -r 8000 -c 1 -b 16 "$b/alice/tone1k.wav" synth 60 sine 1000 vol 0.5
  sox -n -r 8000 -c 1 -b 16 "$b/bob/tone440.wav" synth 60 sine 440 vol 0.5
  for u in bob alice; do
    start_bg "baresip-$u" "$b/$u" baresip -f .
    for _ in $(seq 200); do grep -q "200 OK" "$dir/logs/baresip-$u.out" && break; sleep 0.05; done
    grep -q "200 OK" "$dir/logs/baresip-$u.out" || { log "baresip $u did not register"; rc=1; }
  done
  local ctl="python3 $here/baresip/baresip_ctrl.py"
  $ctl --port "$ctl_a" dial "sip:bob@127.0.0.1" --wait CALL_ESTABLISHED --timeout 10 >"$b/dial.jsonl" || { log "call not established"; rc=1; }
  sleep "$secs"
  $ctl --port "$ctl_a" hangup --wait CALL_CLOSED --timeout 5 >/dev/null || true
  for u in alice bob; do stop_pid "$(cat "$dir/pids/baresip-$u.pid")" "baresip-$u"; rm -f "$dir/pids/baresip-$u.pid"; done
  python3 "$here/tools/audio_check.py" "$b"/bob/dump-*-dec.wav --tone 1000 --min-snr 25 --min-active $((secs - 1)) || rc=1
  python3 "$here/tools/audio_check.py" "$b"/alice/dump-*-dec.wav --tone 440 --min-snr 25 --min-active $((secs - 1)) || rc=1
  [ $rc = 0 ] && log "call-demo OK" || log "call-demo FAILED"
  return $rc
}

sipp_demo() {
  [ -f "$dir/env.sh" ] || die "run 'testbed.sh up' first"
  local s=$dir/sipp rc=0 uas
  rm -rf "$s"; mkdir -p "$s"; cp "$here/sipp/"*.xml "$s/"
  sox -n -r 8000 -c 1 -e u-law -t raw "$s/tone1k.ulaw" synth 5 sine 1000 vol 0.5   # headerless: sipp streams the file as is
  local S=(-nostdin -trace_err -i 127.0.0.1 -timeout 30s -timeout_error -m 1)
  cd "$s" || return 1
  local tp="" uas_port=${SIPP_PORT:-5090} uac_port=$(( ${SIPP_PORT:-5090} + 2 ))
  local uac_rtp=${SIPP_RTP_PORT:-6000} uas_rtp=$(( ${SIPP_RTP_PORT:-6000} + 6 ))
  if command -v tshark >/dev/null; then   # capture the RTP to check the audio afterwards
    tshark -i lo -f "udp portrange $uac_rtp-$((uas_rtp + 5))" -w "$s/rtp.pcap" -q >/dev/null 2>&1 & tp=$!
    echo $tp >"$dir/pids/sipp-tshark.pid"
    sleep 1.5                             # tshark needs ~1 s before it captures
  fi
  sipp -sf register_auth.xml -s carol -au carol -ap secret-carol "${S[@]}" -p "$uas_port" "127.0.0.1:$sip" >/dev/null 2>&1 || { log "sipp REGISTER failed"; rc=1; }
  sipp -sf uas_answer.xml "${S[@]}" -p "$uas_port" -mi 127.0.0.1 -mp "$uas_rtp" >/dev/null 2>&1 & uas=$!
  echo $uas >"$dir/pids/sipp-uas.pid"
  sleep 0.3
  sipp -sf uac_call_auth.xml -s carol -key caller alice -au alice -ap secret-alice "${S[@]}" -p "$uac_port" \
    -mi 127.0.0.1 -mp "$uac_rtp" "127.0.0.1:$sip" >/dev/null 2>&1 || { log "sipp UAC failed"; rc=1; }
  wait $uas || { log "sipp UAS failed"; rc=1; }
  rm -f "$dir/pids/sipp-uas.pid"
  sipp -sf unregister_auth.xml -s carol -au carol -ap secret-carol "${S[@]}" -p "$uas_port" "127.0.0.1:$sip" >/dev/null 2>&1 || rc=1
  if [ -n "$tp" ]; then
    kill -INT "$tp"; wait "$tp"; rm -f "$dir/pids/sipp-tshark.pid"
    local port
    for port in "$uac_rtp" "$uas_rtp"; do   # to the UAC: from the UAS, to the UAS: from the UAC
      "$here/tools/rtp_to_wav.sh" "$s/rtp.pcap" "$port" "$s/rx-$port.wav" &&
        python3 "$here/tools/audio_check.py" "$s/rx-$port.wav" --tone 1000 --min-snr 25 --min-active 4 || rc=1
    done
  fi
  cd - >/dev/null
  [ $rc = 0 ] && log "sipp-demo OK" || log "sipp-demo FAILED (see $s/*_errors.log)"
  return $rc
}

xmpp_demo() {
  [ -f "$dir/env.sh" ] || die "run 'testbed.sh up' first"
  "$py" -c 'import slixmpp' 2>/dev/null || die "no python with slixmpp at $py (run install.sh or set TESTBED_PYTHON)"
  local P=("$py" "$here/tools/xmpp_probe.py" --cafile "$dir/certs/ca.crt" --port "$c2s") rc=0 lp
  "${P[@]}" listen --jid bob@localhost --password secret-bob --count 1 --timeout 10 >"$dir/xmpp-bob.jsonl" & lp=$!
  echo $lp >"$dir/pids/xmpp-listener.pid"
  sleep 1
  "${P[@]}" send --jid alice@localhost --password secret-alice --to bob@localhost --body hello \
    --extra-xml '<probe xmlns="urn:example:testbed" n="1"/>' >/dev/null || rc=1
  wait $lp || rc=1
  rm -f "$dir/pids/xmpp-listener.pid"
  grep -q 'urn:example:testbed' "$dir/xmpp-bob.jsonl" || rc=1
  [ $rc = 0 ] && log "xmpp-demo OK" || log "xmpp-demo FAILED (see $dir/xmpp-bob.jsonl)"
  return $rc
}

case $cmd in
  up) up ;;
  down) down ;;
  prosody-stop) stop_pid "$(cat "$dir/pids/prosody.pid")" prosody ;;
  prosody-start) t0=$(now_ms); prosody_start; log "prosody restarted in $(( $(now_ms) - t0 )) ms" ;;
  ejabberd-stop) for n in ejabberd-beam ejabberd; do stop_pid "$(cat "$dir/pids/$n.pid")" "$n"; done ;;
  ejabberd-start) ejabberd_start ;;
  call-demo) call_demo ;;
  sipp-demo) sipp_demo ;;
  xmpp-demo) xmpp_demo ;;
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
