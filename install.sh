#!/usr/bin/env bash
# install.sh - install cusax: binaries, the systemd user unit, the D-Bus activation file,
# the D-Bus introspection XML and shell completions.
#
#   cargo build --release && sudo ./install.sh                # into /usr/local
#   ./install.sh --prefix ~/.local                            # for one user
#   ./install.sh --prefix /usr --destdir "$pkgdir"            # for a distribution package
#   ./install.sh --from target/debug --prefix /tmp/x          # binaries from another build
#
# The unit's ExecStart= and the activation file's Exec= are written with the installed path.
# The unit goes where the systemd user manager looks: PREFIX/lib/systemd/user for /usr and
# /usr/local, ~/.local/share/systemd/user for a --prefix ~/.local install.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local destdir="" from="$here/target/release"
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
for b in cusaxd cusaxctl; do
  [ -x "$from/$b" ] || { echo "install.sh: $from/$b not found: run cargo build --release first" >&2; exit 1; }
done
root=$destdir$prefix
case $prefix in
  "$HOME/.local") unitdir=share/systemd/user ;;
  *) unitdir=lib/systemd/user ;;
esac
install -Dm755 "$from/cusaxd" "$root/bin/cusaxd"
install -Dm755 "$from/cusaxctl" "$root/bin/cusaxctl"
sed "s#^ExecStart=.*#ExecStart=$prefix/bin/cusaxd#" "$here/systemd/cusaxd.service" |
  install -Dm644 /dev/stdin "$root/$unitdir/cusaxd.service"
sed "s#^Exec=.*#Exec=$prefix/bin/cusaxd#" "$here/dbus/org.cusax.Cusax1.service" |
  install -Dm644 /dev/stdin "$root/share/dbus-1/services/org.cusax.Cusax1.service"
install -Dm644 "$here/dbus/org.cusax.Cusax1.xml" "$root/share/dbus-1/interfaces/org.cusax.Cusax1.xml"
"$from/cusaxctl" completions bash | install -Dm644 /dev/stdin "$root/share/bash-completion/completions/cusaxctl"
"$from/cusaxctl" completions zsh | install -Dm644 /dev/stdin "$root/share/zsh/site-functions/_cusaxctl"
"$from/cusaxctl" completions fish | install -Dm644 /dev/stdin "$root/share/fish/vendor_completions.d/cusaxctl.fish"
echo "installed cusax into $root"
