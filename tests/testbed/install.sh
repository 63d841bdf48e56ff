#!/usr/bin/env bash
# install.sh - install what building and testing cusax needs on Debian 12
# (bookworm): the build's C libraries, and the loopback test bed's servers and
# peers. Runs as root (or through sudo). Takes ~1 min on a fresh machine;
# idempotent.
#   TESTBED_VENV=DIR    Python venv for slixmpp (default: .venv next to this file)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then exec sudo --preserve-env=TESTBED_VENV "$0" "$@"; fi
# Debian images for containers ship /usr/sbin/policy-rc.d returning 101, so the
# packages' postinst scripts do not start system-wide prosody/kamailio/ejabberd.
# Elsewhere they start on all interfaces with the system config: say so, since the demo
# wants their ports (tests use ports of their own).
apt-get update -qq
# build: pkg-config libasound2-dev (cpal) libopus-dev (audiopus)
# tests: the servers and peers, dbus-daemon, systemd-analyze and busctl, gdbus
apt-get install -y -qq --no-install-recommends \
  pkg-config libasound2-dev libopus-dev \
  prosody lua-sec lua-event ejabberd \
  kamailio sip-tester \
  baresip-core \
  sox libsox-fmt-all espeak-ng \
  alsa-utils libasound2-plugins pulseaudio pulseaudio-utils \
  kamailio-tls-modules dbus openssl procps iproute2 tshark \
  systemd libglib2.0-bin python3-venv >/dev/null
# tshark is optional (RTP statistics from captures); answer "no" to the
# non-root capture question (the default with noninteractive).
for service in prosody kamailio ejabberd; do
  if pgrep -x "$service" -u "$service" >/dev/null 2>&1; then
    echo "install.sh: note: a system-wide $service is running; stop it (systemctl disable --now $service) if ./demo cannot bind its ports" >&2
  fi
done
venv=${TESTBED_VENV:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q 'slixmpp>=1.8'
echo "installed; python with slixmpp: $venv/bin/python"
