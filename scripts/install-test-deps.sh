#!/bin/sh
# Installs what `make test` needs beyond scripts/install-deps.sh: promtool,
# which checks /metrics as Prometheus reads it (`promtool check metrics`).
#
# Only the promtool binary is taken from Debian's `prometheus` package, not
# the package: installing it would also install the Prometheus server, with
# an init script and a systemd unit that its postinst starts, and so leave
# a server listening on :9090 on every machine that ran the tests. promtool
# is one self-contained binary (it needs only libc). Idempotent: nothing is
# fetched when promtool is on PATH. PROMTOOL_DIR (default /usr/local/bin)
# is where it goes.
set -eu

if command -v promtool >/dev/null 2>&1; then
	exit 0
fi
dest=${PROMTOOL_DIR:-/usr/local/bin}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "install-test-deps: installing promtool (from Debian's prometheus package) to $dest"
# The download runs as the caller, into a directory apt's own user cannot
# write: say so rather than let apt warn. A machine whose package lists
# are missing or stale gets them once.
download() { apt-get -o APT::Sandbox::User="$(id -un)" download -qq prometheus; }
if ! download 2>/dev/null; then
	$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
	download
fi
dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool
$SUDO install -D -m 0755 usr/bin/promtool "$dest/promtool"
"$dest/promtool" --version | head -1
