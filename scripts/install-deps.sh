#!/bin/sh
# Installs what the service needs at run time and what its tests need:
# bubblewrap (the jail of development machines and CI), Debian's Python 3
# with numpy, pandas, matplotlib, msgpack and seccomp (libseccomp's
# binding). Used by
# `make run`, `make test` and the Dockerfile alike. With NSJAIL_RUNTIME=1
# it adds the shared libraries an nsjail binary needs (the image's case).
# Idempotent: it calls apt-get only when something is missing.
set -eu

packages="bubblewrap python3 python3-numpy python3-pandas python3-matplotlib python3-msgpack python3-seccomp ca-certificates"
if [ "${NSJAIL_RUNTIME:-0}" = 1 ]; then
	packages="$packages libprotobuf32 libnl-route-3-200"
fi
missing=""
for p in $packages; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	echo "install-deps: installing$missing"
	SUDO=""
	if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
	# Wait for another apt-get holding the lock (a concurrent install on a
	# shared machine) instead of failing at once.
	$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing
fi
/usr/bin/python3 -c "import numpy, pandas, matplotlib, msgpack, seccomp" || {
	echo "install-deps: /usr/bin/python3 cannot import numpy, pandas, matplotlib, msgpack and seccomp" >&2
	exit 1
}
