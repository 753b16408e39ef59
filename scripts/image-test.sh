#!/bin/bash
# image-test: builds the Dockerfile with Debian's podman and proves the image
# works, with the least privilege docs/operations.md documents. `make image-test`.
#
#   scripts/image-test.sh                      the bubblewrap variant (CI)
#   NSJAIL_SRC=DIR scripts/image-test.sh       the nsjail variant, nsjail
#                                              built from DIR (see docs/operations.md)
#
# It needs root on a Debian 12 machine: it installs podman and debootstrap
# with apt-get, and creates an unprivileged user for the run. Podman runs
# rootless as that user, so no step creates a cgroup: on cgroup v1 rootless
# podman has none, and the cgroup v1 hierarchy belongs to the machine. The
# script checks that no cgroup appeared, and fails if one did.
#
# Base images: the FROM lines' images are made locally (debootstraps of
# bookworm and, for the default runtime's stage, trixie from the machine's
# Debian mirror, and a Go build image from the bookworm one with the
# machine's /usr/local/go), so nothing is pulled from a registry.
# IMAGE_TEST_PULL=1 pulls them from their registry instead.
#
# Where the machine trusts an extra CA (a TLS-intercepting egress), the
# bundle at $SSL_CERT_FILE (default /etc/ssl/certs/ca-certificates.crt) is
# passed to the Go build stage as a build secret; the test checks that no
# layer of the image holds the machine's own CAs.
#
# Last, scripts/kube-play-test.sh plays deploy/k8s on the image with
# Debian 13's podman.
#
# Everything it makes (user, images, containers, files) is removed at the
# end, also on failure. It dials nothing but loopback once the image is
# built.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
jail=bwrap
if [ -n "${NSJAIL_SRC:-}" ]; then
	jail=nsjail
	NSJAIL_SRC=$(cd "$NSJAIL_SRC" && pwd)
	[ -f "$NSJAIL_SRC/nsjail.cc" ] && [ -f "$NSJAIL_SRC/kafel/Makefile" ] || {
		echo "image-test: $NSJAIL_SRC is not an nsjail checkout with its kafel submodule" >&2
		exit 1
	}
fi
image=localhost/pyexec-image-test:$jail
user=pyexec-image-test
start=$(date +%s)

say() { echo "image-test: $*" >&2; }
fail() {
	say "FAIL: $*"
	exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root: it installs packages and creates a user for rootless podman"

need=""
for p in podman runc uidmap slirp4netns debootstrap curl jq ca-certificates apparmor; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
	say "installing$need"
	apt-get update -qq -o DPkg::Lock::Timeout=300
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends $need >/dev/null
fi

# The AppArmor profile for hosts that enforce AppArmor parses (this machine
# has no AppArmor in its kernel, so it is only parsed, never loaded).
apparmor_parser --skip-kernel-load --skip-cache "$repo/deploy/apparmor/pyexec" >/dev/null ||
	fail "deploy/apparmor/pyexec does not parse"
say "ok: deploy/apparmor/pyexec parses"

# cgroups: every directory of every hierarchy, before anything runs.
cgroups() { find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | sort; }
work=$(mktemp -d /tmp/pyexec-image-test.XXXXXX)
chmod 755 "$work"
cgroups >"$work/cgroups.before"

cid=""
made_user=""
subids=""
cleanup() {
	status=$?
	set +e
	if [ -n "$made_user" ]; then
		if [ -n "$cid" ] && [ "$status" != 0 ]; then
			say "container log:"
			pm logs "$cid" 2>&1 | tail -n 40 >&2
		fi
		pm rm --all --force --time 0 >/dev/null 2>&1
		pm system reset --force >/dev/null 2>&1
		# Rootless podman keeps a pause process holding its namespaces.
		if [ -f "$work/run/libpod/tmp/pause.pid" ]; then
			kill "$(cat "$work/run/libpod/tmp/pause.pid")" 2>/dev/null
		fi
		usermod --del-subuids "$subids" --del-subgids "$subids" "$user" 2>/dev/null
		userdel "$user" 2>/dev/null
	fi
	rm -rf "$work"
	say "done in $(($(date +%s) - start)) s"
	exit "$status"
}
trap cleanup EXIT
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

# The user podman runs as, with 65536 subordinate ids after any in use.
if id "$user" >/dev/null 2>&1; then
	fail "user $user exists: a previous run did not clean up (userdel $user, and its /etc/subuid lines)"
fi
first=$(cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: 'BEGIN { m = 1000000 } $2 + $3 > m { m = $2 + $3 } END { print m }')
subids="$first-$((first + 65535))"
mkdir -p "$work/home/.config/containers" "$work/run"
useradd --system --no-create-home --home-dir "$work/home" --shell /usr/sbin/nologin --user-group "$user"
made_user=1
usermod --add-subuids "$subids" --add-subgids "$subids" "$user"
printf '[storage]\ndriver = "overlay"\n' >"$work/home/.config/containers/storage.conf"
# runc: Debian's crun refuses this machine's hybrid cgroup layout.
printf '[engine]\nruntime = "runc"\n' >"$work/home/.config/containers/containers.conf"
chown -R "$user:" "$work/home" "$work/run"
chmod 700 "$work/run"

pm() {
	(cd "$work" && runuser -u "$user" -- env HOME="$work/home" XDG_RUNTIME_DIR="$work/run" \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin podman "$@")
}

# A minbase root file system of Debian's SUITE in DIR, with its apt sources
# and nothing downloaded left in it.
debian_rootfs() {
	local suite=$1 dir=$2
	debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$work/debootstrap-$suite.log" 2>&1 ||
		{ tail -n 20 "$work/debootstrap-$suite.log" >&2; fail "debootstrap $suite failed"; }
	cat >"$dir/etc/apt/sources.list" <<-EOF
		deb ${mirror%/} $suite main
		deb ${mirror%/} $suite-updates main
		deb ${mirror%/}-security $suite-security main
	EOF
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
}

# import_rootfs DIR NAME: the root file system DIR as the image NAME.
import_rootfs() {
	tar -C "$1" -cf "$work/rootfs.tar" .
	chmod 644 "$work/rootfs.tar"
	pm import --quiet --change 'CMD ["bash"]' "$work/rootfs.tar" "$2" >/dev/null
	rm -f "$work/rootfs.tar"
}

# Base images, under the names the Dockerfile's FROM lines use.
make_base_images() {
	local t0
	t0=$(date +%s)
	mirror=$(grep -hs -E '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources |
		grep -Eo 'https?://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
	mirror=${mirror:-http://deb.debian.org/debian}
	say "making base images: debootstrap bookworm and trixie from $mirror"
	debian_rootfs bookworm "$work/rootfs"
	import_rootfs "$work/rootfs" docker.io/library/debian:bookworm
	pm tag docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim
	# The default runtime's stage (Dockerfile, runtime-debian13-ds).
	debian_rootfs trixie "$work/trixie"
	import_rootfs "$work/trixie" docker.io/library/debian:trixie-slim
	rm -rf "$work/trixie"
	# The Go build image: the same system with make, the machine's Go
	# toolchain and the environment of Docker's golang images.
	cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf"
	chroot "$work/rootfs" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make >/dev/null 2>&1' ||
		fail "cannot install make in the Go build image"
	rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* "$work/rootfs/etc/resolv.conf"
	cp -a "$(go env GOROOT 2>/dev/null || echo /usr/local/go)" "$work/rootfs/usr/local/go"
	mkdir -p "$work/rootfs/go"
	tar -C "$work/rootfs" -cf "$work/golang.tar" .
	chmod 644 "$work/golang.tar"
	pm import --quiet --change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV GOPATH=/go' --change 'WORKDIR /go' --change 'CMD ["bash"]' \
		"$work/golang.tar" docker.io/library/golang:1.26-bookworm >/dev/null
	rm -rf "$work/rootfs" "$work/golang.tar"
	say "base images made in $(($(date +%s) - t0)) s"
}
if [ "${IMAGE_TEST_PULL:-0}" = 1 ]; then
	pm pull --quiet docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim docker.io/library/debian:trixie-slim docker.io/library/golang:1.26-bookworm >/dev/null
else
	make_base_images
fi

# The build: the Go stage trusts the machine's CA bundle through a secret.
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
install -m 0644 "$ca" "$work/build-ca.crt"
version=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)
# --network=host: no RUN step gets a network namespace of its own. Rootless
# podman would otherwise give each one slirp4netns, which must open
# /dev/net/tun, and a freshly provisioned machine keeps that device
# root-only (0600): the build then fails at its first RUN ("failed to read
# from slirp4netns sync pipe"). The steps only download from Debian's mirror
# and the module proxy, which the host's network reaches as it is.
build=(build --format docker --pull=never --network=host --build-arg "JAIL=$jail" --build-arg "VERSION=$version"
	--secret "id=build-ca,src=$work/build-ca.crt" --tag "$image")
if [ "$jail" = nsjail ]; then
	build+=(--build-context "nsjail-src=$NSJAIL_SRC")
fi
say "building the $jail image ($version)"
t0=$(date +%s)
pm "${build[@]}" "$repo" >"$work/build.log" 2>&1 || {
	tail -n 40 "$work/build.log" >&2
	fail "the image did not build"
}
say "image built in $(($(date +%s) - t0)) s"

# No layer of the image holds a CA the machine added to its trust store.
pm save --quiet --format docker-archive --output "$work/home/image.tar" "$image"
for crt in /usr/local/share/ca-certificates/*.crt; do
	[ -f "$crt" ] || continue
	line=$(grep -v -e '-----' "$crt" | sed -n 5p)
	[ -n "$line" ] || continue
	hits=$(grep -a -c -F "$line" "$work/home/image.tar" || true)
	[ "$hits" = 0 ] || fail "a layer of the image holds $crt"
	say "ok: no layer holds $crt"
done

# The container's seccomp profile (deploy/seccomp/pyexec.json: the runtime
# default plus what the jail needs), readable by the podman user.
install -m 0644 "$repo/deploy/seccomp/pyexec.json" "$work/seccomp.json"

# The documented privileges (docs/operations.md, "Running in production"), with one
# difference: the container shares the host's network namespace and listens
# on a loopback port of its own, because publishing a port from a rootless
# container needs slirp4netns and so /dev/net/tun, root-only on a fresh
# machine (see the build above). Every sandbox still gets a network
# namespace of its own from the jail: the "interfaces" check below.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
privileges=(--read-only --read-only-tmpfs=false --cap-drop=ALL --security-opt no-new-privileges
	--security-opt unmask=/proc/* --network=host)
run=(run --detach --name pyexec-image-test "${privileges[@]}" --security-opt "seccomp=$work/seccomp.json")
run+=(--env "PORT=$port") # what the image's HEALTHCHECK dials
say "podman ${run[*]} $image --addr 127.0.0.1:$port --warm 2"
# (Without systemd, podman says it cannot set up the periodic health
# check; the check itself is run below.)
cid=$(pm "${run[@]}" "$image" --addr "127.0.0.1:$port" --warm 2 2>"$work/run.err") || {
	cat "$work/run.err" >&2
	fail "podman run failed"
}
base=http://127.0.0.1:$port

for _ in $(seq 1 120); do
	curl -fsS -m 2 "$base/health" >"$work/health.json" 2>/dev/null && break
	[ "$(pm inspect --format '{{.State.Running}}' "$cid")" = true ] || fail "the container stopped"
	sleep 0.5
done
[ -s "$work/health.json" ] || fail "no healthy /health within 60 s"
got=$(jq -r '.jail + " " + .version' "$work/health.json")
[ "$got" = "$jail $version" ] || fail "/health says jail and version \"$got\", want \"$jail $version\""
say "ok: /health names the jail and version: $got"
# The default runtime is Debian 13's (Python 3.13, pandas 2).
got=$(jq -r '[.runtimes[] | select(.default) | .name + " " + .python + " " + .pandas] | join(",")' "$work/health.json")
case "$got" in "debian13-ds 3.13."*" 2."*) ;; *) fail "/health's default runtime is \"$got\", want debian13-ds with Python 3.13 and pandas 2" ;; esac
say "ok: the default runtime: $got"

execute() { curl -sS -m 30 -X POST "$base/execute" -H 'Content-Type: application/json' -d "$1"; }
metrics() { curl -fsS -m 5 "$base/metrics"; }
# shellcheck source=scripts/examples.sh
. "$repo/scripts/examples.sh"
check_examples

# Every process of the container: no capabilities, and not root, neither in
# the container nor on the host, once nothing is starting (wait_settled
# says why).
wait_settled
pids=$(pm top "$cid" hpid | tail -n +2)
[ -n "$pids" ] || fail "podman top lists no process"
n=0
for pid in $pids; do
	[ -r "/proc/$pid/status" ] || continue
	name=$(awk '$1 == "Name:" { print $2 }' "/proc/$pid/status")
	uids=$(awk '$1 == "Uid:" { print $2, $3, $4, $5 }' "/proc/$pid/status")
	capeff=$(awk '$1 == "CapEff:" { print $2 }' "/proc/$pid/status")
	filter=$(awk '$1 == "Seccomp:" { print $2 }' "/proc/$pid/status")
	[ "$filter" = 2 ] || fail "process $pid ($name) runs without a seccomp filter (Seccomp: $filter)"
	case " $uids " in *" 0 "*) fail "process $pid ($name) has host uid 0: $uids" ;; esac
	[ "$capeff" = 0000000000000000 ] || fail "process $pid ($name) has capabilities $capeff"
	n=$((n + 1))
done
say "ok: $n processes, each under a seccomp filter, none with a capability or host uid 0"
pm top "$cid" pid user huser capeff comm >&2 2>/dev/null || true

pm healthcheck run "$cid" >/dev/null || fail "podman healthcheck run failed"
say "ok: the image's health check passes"

# SIGTERM (podman stop) ends it cleanly, well before the kill.
t0=$(date +%s)
pm stop --time 40 "$cid" >/dev/null 2>>"$work/run.err"
code=$(pm inspect --format '{{.State.ExitCode}}' "$cid")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
pm logs "$cid" >"$work/container.log" 2>&1
grep -q '"shutting down"' "$work/container.log" || fail "no shutdown in the log"
say "ok: SIGTERM stopped it cleanly in $(($(date +%s) - t0)) s"

# Each addition to the runtime's default seccomp profile is needed: without
# it the server refuses to start (its jail probe fails) instead of serving.
profiles="$repo/deploy/check"
for addition in $(cd "$profiles" && go run ./cmd/container-seccomp -list); do
	(cd "$profiles" && go run ./cmd/container-seccomp -without "$addition") >"$work/seccomp-less.json"
	chmod 0644 "$work/seccomp-less.json"
	less=$(pm run --detach "${privileges[@]}" --security-opt "seccomp=$work/seccomp-less.json" \
		"$image" --addr 127.0.0.1:0 --warm 1 2>>"$work/run.err") || fail "podman run without $addition failed"
	outcome=""
	for _ in $(seq 1 120); do
		if [ "$(pm inspect --format '{{.State.Running}}' "$less")" != true ]; then
			outcome=exited
			break
		fi
		pm logs "$less" 2>&1 | grep -q '"message":"serving"' && { outcome=serving; break; }
		sleep 0.5
	done
	pm logs "$less" >"$work/less.log" 2>&1
	pm rm --force --time 0 "$less" >/dev/null 2>&1
	[ "$outcome" = exited ] || fail "without the seccomp addition \"$addition\" the server ${outcome:-did not stop in 60 s}: the addition is not needed"
	grep -q 'refusing to start' "$work/less.log" || { cat "$work/less.log" >&2; fail "without $addition the server stopped for another reason"; }
	say "ok: without the seccomp addition \"$addition\" the server refuses to start: $(grep -o 'refusing to start[^"]*' "$work/less.log" | head -c 200)"
done

# The Kubernetes manifests, played for real by Debian 13's podman
# (scripts/kube-play-test.sh).
DEBIAN_MIRROR=${mirror:-http://deb.debian.org/debian} "$repo/scripts/kube-play-test.sh" "$work/home/image.tar" "$image" "$user" ||
	fail "the Kubernetes manifests did not play"
rm -f "$work/home/image.tar"

cgroups >"$work/cgroups.after"
own=$(dirname "$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)")
new=$(comm -13 "$work/cgroups.before" "$work/cgroups.after")
# The machine's supervisor makes cgroups for its own processes next to this
# script's; any other new directory is this run's doing.
foreign=$(echo "$new" | grep -v -x -E "/sys/fs/cgroup/memory${own}/[^/]+" | grep . || true)
[ -z "$foreign" ] || fail "new cgroups appeared: $foreign"
say "ok: no cgroup was created: $(wc -l <"$work/cgroups.before") directories before, none new but $(echo "$new" | grep -c . || true) of the supervisor"
say "PASS ($jail)"
