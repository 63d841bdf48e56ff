#!/usr/bin/env bash
# install.sh - install what building and testing cusax needs on Debian 12
# (bookworm): the build's C libraries, and the loopback test bed's servers and
# peers. Runs as root (or through sudo). Takes ~1 min on a fresh machine;
# idempotent.
#   TESTBED_EJABBERD=1  also install ejabberd (+ Erlang, ~60 MB)
#   TESTBED_VENV=DIR    Python venv for slixmpp (default: .venv next to this file)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then exec sudo --preserve-env=TESTBED_EJABBERD,TESTBED_VENV "$0" "$@"; fi
# Debian images for containers ship /usr/sbin/policy-rc.d returning 101, so the
# packages' postinst scripts do not start system-wide prosody/kamailio/ejabberd.
# Elsewhere, stop those services (or mask them) if they grab the ports.
apt-get update -qq
# build: pkg-config libasound2-dev (cpal) libopus-dev (audiopus)
# tests: the servers and peers, dbus-daemon, systemd-analyze and busctl, gdbus
apt-get install -y -qq --no-install-recommends \
  pkg-config libasound2-dev libopus-dev \
  prosody lua-sec lua-event \
  kamailio sip-tester \
  baresip-core \
  sox libsox-fmt-all espeak-ng \
  alsa-utils libasound2-plugins pulseaudio pulseaudio-utils \
  kamailio-tls-modules dbus openssl procps iproute2 tshark \
  systemd libglib2.0-bin python3-venv >/dev/null
# tshark is optional (RTP statistics from captures); answer "no" to the
# non-root capture question (the default with noninteractive).
if [ "${TESTBED_EJABBERD:-0}" = 1 ]; then
  apt-get install -y -qq --no-install-recommends ejabberd >/dev/null
fi
venv=${TESTBED_VENV:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q 'slixmpp>=1.8'
echo "installed; python with slixmpp: $venv/bin/python"
