#!/bin/sh
# Builds, inside the Dockerfile's runtime stage (a Debian image of the
# runtime's suite), the runtime NAME from /tmp/runtime.conf (versions by
# /tmp/runtime-versions.py, scripts/runtime-versions.py): installs its
# packages with apt into this very image, whose root then becomes the
# runtime's root/, and writes /out/NAME/{runtime.conf,versions,packages}
# as scripts/build-runtime.sh does on a host (where debootstrap needs root,
# which a rootless image build does not have).
set -eu
name=$1
conf=/tmp/runtime.conf
packages=$(sed -n 's/^[[:space:]]*packages[[:space:]]*=//p' "$conf" | tr '\n' ' ')
[ -n "$packages" ] || { echo "no packages in $conf" >&2; exit 1; }
apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
mkdir -p "/out/$name"
cp "$conf" "/out/$name/runtime.conf"
/usr/bin/python3 -I /tmp/runtime-versions.py >"/out/$name/versions"
dpkg-query -W -f '${Package} ${Version}\n' >"/out/$name/packages"
cat "/out/$name/versions"
