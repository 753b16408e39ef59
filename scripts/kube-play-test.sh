#!/bin/bash
# kube-play-test: plays deploy/k8s for real with `podman kube play` and runs
# the README's examples against the pod. scripts/image-test.sh runs it on
# the image it built; by hand:
#
#   scripts/kube-play-test.sh IMAGE_ARCHIVE IMAGE USER
#
# IMAGE_ARCHIVE is a `podman save --format docker-archive` of IMAGE; USER
# is an unprivileged host user with subordinate ids in /etc/subuid and
# /etc/subgid (at least 65536), which podman runs as, rootless.
#
# Debian 12's podman (4.3) cannot play the manifests: it ignores
# procMount: Unmasked, so the jail cannot mount its /proc. Debian 13's
# podman (5.4) can. So the test runs Debian 13's podman from a debootstrap
# of trixie (the machine's own packages are left alone), in namespaces of
# its own: a mount namespace whose root is that tree, a network namespace
# with only a loopback interface, and a PID namespace, so that killing its
# first process ends every process the test started.
#
# What podman does not play the way a cluster does, and what the test does
# instead (docs/operations.md, "Kubernetes"):
#   - the Service: podman plays no Service, and the pod shares the test's
#     network namespace (--network host: rootless podman would otherwise
#     need /dev/net/tun, root-only on a fresh machine). The test dials the
#     container port the Service's targetPort names, on loopback, as
#     kube-proxy would forward to it;
#   - hostUsers: false: podman gives such a pod 1024 ids by default, which
#     do not reach uid 65534; a kubelet gives 65536 (--userns
#     auto:size=65536);
#   - the Localhost seccomp profile: podman 5.4 reads it only from the
#     deprecated annotation, which deploy/check/cmd/kube-play-manifest
#     adds with the field's value;
#   - the probes: podman turns the liveness probe into a health check that
#     runs curl inside the image (which has none), and ignores readiness;
#     the test dials both probes' paths itself;
#   - replicas: podman runs one; resources: ignored on a cgroup v1 host.
#     No cgroup is made (image-test checks that every hierarchy is
#     unchanged).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "kube-play-test: $*" >&2; }
fail() {
	say "FAIL: $*"
	exit 1
}
[ $# = 3 ] || fail "usage: $0 IMAGE_ARCHIVE IMAGE USER"
archive=$(realpath "$1")
image=$2
user=$3
[ "$(id -u)" = 0 ] || fail "run as root: it debootstraps Debian 13 and makes namespaces"
[ -r "$archive" ] || fail "no image archive at $archive"
uid=$(id -u "$user") || fail "no user $user"
gid=$(id -g "$user")
subuid=$(awk -F: -v u="$user" '$1 == u { print $2 ":" $3; exit }' /etc/subuid)
subgid=$(awk -F: -v u="$user" '$1 == u { print $2 ":" $3; exit }' /etc/subgid)
[ -n "$subuid" ] && [ "${subuid#*:}" -ge 65536 ] || fail "$user has fewer than 65536 subordinate uids"
[ -n "$subgid" ] && [ "${subgid#*:}" -ge 65536 ] || fail "$user has fewer than 65536 subordinate gids"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
start=$(date +%s)

work=$(mktemp -d /tmp/pyexec-kube-play.XXXXXX)
root=$work/root
home=/home/$user
unshare_pid=""
holder=""
cleanup() {
	status=$?
	set +e
	if [ -n "$holder" ]; then
		if [ "$status" != 0 ]; then
			say "pod log:"
			as_user podman logs pyexec-pod-pyexec 2>&1 | tail -n 40 >&2
		fi
		as_user podman kube down "$home/kube.yaml" >/dev/null 2>&1
		# The namespaces' first process: its end kills every process in
		# them (conmon, the pod, podman's pause process).
		kill -KILL "$holder" 2>/dev/null
	fi
	[ -n "$unshare_pid" ] && wait "$unshare_pid" 2>/dev/null
	rm -rf "$work"
	say "done in $(($(date +%s) - start)) s"
	exit "$status"
}
trap cleanup EXIT
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

# Debian 13 with podman 5.4. runc, not crun: crun refuses this machine's
# hybrid cgroup layout. catatonit: podman's pause image, built locally.
say "debootstrap trixie with podman from $mirror"
t0=$(date +%s)
debootstrap --variant=minbase --include=podman,runc,uidmap,catatonit,curl,iproute2 trixie "$root" "$mirror" \
	>"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap trixie failed"; }
rm -rf "$root"/var/cache/apt/archives/*.deb
chroot "$root" groupadd --gid "$gid" "$user"
chroot "$root" useradd --uid "$uid" --gid "$gid" --no-create-home --home-dir "$home" --shell /bin/sh "$user"
echo "$user:$subuid" >"$root/etc/subuid"
echo "$user:$subgid" >"$root/etc/subgid"
mkdir -p "$root$home/.config/containers" "$root$home/seccomp" "$root/image"
printf '[storage]\ndriver = "overlay"\n' >"$root$home/.config/containers/storage.conf"
printf '[engine]\nruntime = "runc"\n' >"$root$home/.config/containers/containers.conf"
say "podman $(chroot "$root" dpkg-query -W -f='${Version}' podman) ready in $(($(date +%s) - t0)) s"

# The manifests as podman plays them, with the token's Secret, and the
# profile where the pod's Localhost seccomp profile points.
token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf %s "$token" >"$work/token"
(cd "$repo/deploy/check" && go run ./cmd/kube-play-manifest -image "$image" -token-file "$work/token") >"$root$home/kube.yaml"
read -r port ready_path live_path < <(cd "$repo/deploy/check" && go run ./cmd/kube-play-manifest -endpoints)
install -m 0644 "$repo/deploy/seccomp/pyexec.json" "$root$home/seccomp/pyexec.json"
chown -R "$uid:$gid" "$root$home"

# The namespaces, held by catatonit as their first process.
unshare --mount --net --pid --fork --kill-child bash -c '
	set -e
	root=$1 uid=$2 archive=$3
	mount --make-rprivate /
	mount --bind "$root" "$root"
	mount -t proc proc "$root/proc"
	mount --rbind /sys "$root/sys"
	mount --rbind /dev "$root/dev"
	mount -t tmpfs -o mode=0755 tmpfs "$root/run"
	mkdir -m 0755 "$root/run/user"
	mkdir -m 0700 "$root/run/user/$uid"
	chown "$uid" "$root/run/user/$uid"
	mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
	mount --bind "$(dirname "$archive")" "$root/image"
	mkdir -p "$root/.old"
	cd "$root"
	pivot_root . .old
	umount -l /.old
	mount --make-rshared /
	ip link set lo up
	exec /usr/bin/catatonit -P
' _ "$root" "$uid" "$archive" 2>"$work/namespaces.log" &
unshare_pid=$!
for _ in $(seq 1 100); do
	child=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null || true)
	if [ -n "$child" ] && [ "$(cat "/proc/${child% }/comm" 2>/dev/null)" = catatonit ]; then
		holder=${child% }
		break
	fi
	sleep 0.1
done
[ -n "$holder" ] || { cat "$work/namespaces.log" >&2; fail "the namespaces did not come up"; }

# A command in the namespaces, as root or as the user.
in_ns() { nsenter --target "$holder" --mount --net --pid --root --wd -- "$@"; }
as_user() {
	in_ns setpriv --reuid "$uid" --regid "$gid" --clear-groups \
		env -i HOME="$home" XDG_RUNTIME_DIR="/run/user/$uid" PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		PODMAN_IGNORE_CGROUPSV1_WARNING=1 sh -c 'cd "$HOME" && exec "$@"' _ "$@"
}

t0=$(date +%s)
as_user podman load --quiet --input "/image/$(basename "$archive")" >/dev/null
say "image loaded in $(($(date +%s) - t0)) s"

say "podman kube play --userns auto:size=65536 --network host --seccomp-profile-root $home/seccomp kube.yaml"
as_user podman kube play --userns auto:size=65536 --network host --seccomp-profile-root "$home/seccomp" \
	"$home/kube.yaml" >"$work/play.log" 2>&1 || { cat "$work/play.log" >&2; fail "podman kube play failed"; }
ctr=pyexec-pod-pyexec
base=http://127.0.0.1:$port
get() { in_ns curl -fsS -m 5 "$@"; }

# The probes, as a kubelet would send them.
for _ in $(seq 1 240); do
	get "$base$ready_path" >/dev/null 2>&1 && break
	[ "$(as_user podman inspect --format '{{.State.Running}}' "$ctr")" = true ] || fail "the pod's container stopped"
	sleep 0.5
done
get "$base$ready_path" >/dev/null || fail "readiness ($ready_path on port $port) did not pass within 120 s"
get "$base$live_path" >/dev/null || fail "liveness ($live_path on port $port) does not pass"
say "ok: the Deployment is ready and live ($ready_path, $live_path on the port the Service targets, $port)"

# The Secret reached the pod: /execute wants its token.
code=$(in_ns curl -sS -m 30 -o /dev/null -w '%{http_code}' -X POST "$base/execute" \
	-H 'Content-Type: application/json' -d '{"script": "def main():\n    return 1"}')
[ "$code" = 401 ] || fail "/execute without the Secret's token answered $code, want 401"
say "ok: /execute without the Secret's token: 401"

execute() {
	in_ns curl -sS -m 30 -X POST "$base/execute" -H 'Content-Type: application/json' \
		-H "Authorization: Bearer $token" -d "$1"
}
metrics() { in_ns curl -fsS -m 5 -H "Authorization: Bearer $token" "$base/metrics"; }
# shellcheck source=scripts/examples.sh
. "$repo/scripts/examples.sh"
check_examples

# The pod's security settings took effect. hostUsers: false: every process
# of the container has a host uid from the user's subordinate range, none
# its own uid or 0. seccomp: each is under a filter, and the server could
# make its sandboxes' namespaces and host names, which the runtime's
# default profile refuses. capabilities: none. procMount: Unmasked: no
# mount hides a part of the container's /proc.
# The processes are read once nothing is starting (wait_settled says why).
wait_settled
first=${subuid%:*}
last=$((first + ${subuid#*:} - 1))
pids=$(as_user podman top "$ctr" hpid | tail -n +2)
[ -n "$pids" ] || fail "podman top lists no process"
n=0
for pid in $pids; do
	proc_status=$(in_ns cat "/proc/$pid/status" 2>/dev/null) || continue
	name=$(echo "$proc_status" | awk '$1 == "Name:" { print $2 }')
	read -r ruid euid suid fsuid < <(echo "$proc_status" | awk '$1 == "Uid:" { print $2, $3, $4, $5 }')
	for id in $ruid $euid $suid $fsuid; do
		[ "$id" -ge "$first" ] && [ "$id" -le "$last" ] ||
			fail "process $pid ($name) has host uid $id, outside the pod's user namespace ($first-$last)"
	done
	[ "$(echo "$proc_status" | awk '$1 == "Seccomp:" { print $2 }')" = 2 ] || fail "process $pid ($name) runs without a seccomp filter"
	[ "$(echo "$proc_status" | awk '$1 == "CapEff:" { print $2 }')" = 0000000000000000 ] || fail "process $pid ($name) has capabilities"
	n=$((n + 1))
done
say "ok: $n processes, each with a host uid of the pod's user namespace, a seccomp filter and no capability"
cpid=$(as_user podman inspect --format '{{.State.Pid}}' "$ctr")
masks=$(in_ns awk '$5 ~ "^/proc/." { print $5 }' "/proc/$cpid/mountinfo")
[ -z "$masks" ] || fail "procMount: Unmasked did not take: $(echo "$masks" | tr '\n' ' ')"
say "ok: nothing masks the container's /proc"

# Stopping the pod: SIGTERM with the Deployment's grace period; the server
# drains and exits 0.
grace=$(as_user podman inspect --format '{{.Config.StopTimeout}}' "$ctr")
t0=$(date +%s)
as_user podman pod stop pyexec-pod >/dev/null
code=$(as_user podman inspect --format '{{.State.ExitCode}}' "$ctr")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
as_user podman logs "$ctr" 2>&1 | grep -q '"shutting down"' || fail "no shutdown in the log"
say "ok: SIGTERM stopped the pod cleanly in $(($(date +%s) - t0)) s (grace period $grace s)"
say "PASS"
