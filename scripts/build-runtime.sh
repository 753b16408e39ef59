#!/bin/bash
# build-runtime: builds the runtime NAME, a root file system with the Python
# a sandbox runs, from runtimes/NAME.conf (suite, packages, preload), with
# debootstrap from Debian's mirror. `make runtimes` builds every one.
#
#   scripts/build-runtime.sh NAME...        build (or find cached) runtimes
#   RUNTIME_CACHE=DIR                       where (default /var/cache/pyexec/runtimes)
#   RUNTIME_CONF_DIR=DIR                    where the .conf files are (default runtimes/)
#
# The result is $RUNTIME_CACHE/NAME, a link to NAME.HASH: HASH is a hash of
# the suite, the sorted package list and builder_version (raise it when a
# change here changes what is built), so an unchanged list is found and
# not rebuilt, and a changed one is built beside the old (which a running
# server may still use) before the link moves. A change of preload or of
# comments only refreshes runtime.conf. NAME.HASH holds:
#   root/           the tree the jail binds (its usr and etc) read-only
#   runtime.conf    the .conf it was built from (the server reads preload)
#   versions        python, numpy, pandas versions, "key=value" lines
#   packages        every installed package and its version (dpkg-query)
# Reproducible as far as Debian's mirror is: the same list gives the same
# packages at the same point release; "packages" records exactly which.
#
# The tree is readable and traversable by everyone (the jail's uid 65534
# must reach it: a cache under /root would be refused), and owned by root.
# Needs root (debootstrap), debootstrap itself (installed when missing), and
# Debian's mirror; nothing else is downloaded.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
builder_version=1
cache=${RUNTIME_CACHE:-/var/cache/pyexec/runtimes}
confdir=${RUNTIME_CONF_DIR:-$repo/runtimes}

say() { echo "build-runtime: $*" >&2; }
fail() {
	say "FAIL: $*"
	exit 1
}

[ $# -gt 0 ] || fail "usage: $0 NAME... (runtimes: $(cd "$confdir" && ls -- *.conf | sed 's/\.conf$//' | tr '\n' ' '))"
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || fail "run as root: debootstrap needs it"
	exec sudo RUNTIME_CACHE="$cache" RUNTIME_CONF_DIR="$confdir" MIRROR="${MIRROR:-}" "$0" "$@"
fi

if ! command -v debootstrap >/dev/null; then
	say "installing debootstrap"
	apt-get -o DPkg::Lock::Timeout=300 update -qq
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends debootstrap >/dev/null
fi

# The mirror this machine's apt uses (as scripts/image-test.sh finds it).
mirror=$(grep -hs -E '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources |
	grep -Eo 'https?://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
mirror=${MIRROR:-${mirror:-http://deb.debian.org/debian}}
mirror=${mirror%/}

# conf_values KEY FILE: every value of KEY, space-joined.
conf_values() {
	sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*(.*)$/\1/p" "$2" | tr '\n' ' ' | sed -E 's/[[:space:]]+/ /g; s/^ //; s/ $//'
}

build_one() {
	local name=$1 conf suite packages hash dir tmp t0
	[[ $name =~ ^[a-z0-9][a-z0-9.-]*$ ]] || fail "runtime name $name: lower-case letters, digits, '.' and '-' only"
	conf=$confdir/$name.conf
	[ -f "$conf" ] || fail "no $conf"
	# Unknown keys are refused: a typo must not silently build something else.
	if grep -v -E '^[[:space:]]*(#.*)?$' "$conf" | grep -v -E '^[[:space:]]*(suite|packages|preload)[[:space:]]*=' >&2; then
		fail "$conf: only suite, packages and preload lines (and # comments) are allowed"
	fi
	suite=$(conf_values suite "$conf")
	packages=$(conf_values packages "$conf" | tr ' ' '\n' | sort -u | tr '\n' ',' | sed 's/,$//')
	[ -n "$suite" ] && [ -n "$packages" ] || fail "$conf: needs suite and packages"
	[[ $suite =~ ^[a-z]+$ ]] || fail "$conf: suite $suite is not a Debian code name"
	hash=$(printf '%s\n' "$builder_version" "$suite" "$packages" | sha256sum | cut -c1-12)
	dir=$cache/$name.$hash
	if [ -f "$dir/versions" ]; then
		if ! cmp -s "$conf" "$dir/runtime.conf"; then
			cp "$conf" "$dir/runtime.conf.tmp" && chmod 644 "$dir/runtime.conf.tmp" && mv "$dir/runtime.conf.tmp" "$dir/runtime.conf"
		fi
		ln -sfn "$name.$hash" "$cache/$name.tmp" && mv -T "$cache/$name.tmp" "$cache/$name"
		say "$name: cached at $dir ($(tr '\n' ' ' <"$dir/versions"))"
		return
	fi
	mkdir -p "$cache"
	# The jail's uid must traverse to the roots: the cache is made
	# readable, and its parent only gains the search bit (it may be a
	# shared directory such as /var/tmp, whose other bits are not ours).
	chmod 755 "$cache"
	chmod a+x "$(dirname "$cache")"
	tmp=$(mktemp -d "$cache/.$name.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	chmod 755 "$tmp"
	t0=$(date +%s)
	say "$name: debootstrap $suite from $mirror with $packages"
	debootstrap --variant=minbase --include="$packages" "$suite" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$tmp/debootstrap.log" >&2; fail "$name: debootstrap failed (log above)"; }
	# What the jail never needs: downloaded packages and apt's lists.
	rm -rf "$tmp"/root/var/cache/apt/archives/*.deb "$tmp"/root/var/lib/apt/lists/*
	chroot "$tmp/root" dpkg-query -W -f='${Package} ${Version}\n' >"$tmp/packages"
	chroot "$tmp/root" /usr/bin/python3 -I - <"$repo/scripts/runtime-versions.py" >"$tmp/versions"
	cp "$conf" "$tmp/runtime.conf"
	rm -f "$tmp/debootstrap.log"
	chmod 755 "$tmp" "$tmp/root"
	mv -T "$tmp" "$dir"
	trap - EXIT
	ln -sfn "$name.$hash" "$cache/$name.tmp" && mv -T "$cache/$name.tmp" "$cache/$name"
	say "$name: built at $dir in $(($(date +%s) - t0))s ($(tr '\n' ' ' <"$dir/versions"))"
}

# Several runtimes are built at once: each debootstrap has a root of its
# own, and one's downloads overlap another's unpacking. Measured on a
# 2-CPU development machine: both shipped runtimes at once in 2 min 32 s
# (debian13-ds 152 s, debian12 146 s), where one after the other had
# taken 9 min on a busier day.
pids=""
for name in "$@"; do
	build_one "$name" &
	pids="$pids $!"
done
status=0
for pid in $pids; do
	wait "$pid" || status=1
done
exit "$status"
