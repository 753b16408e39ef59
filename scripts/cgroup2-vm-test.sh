#!/bin/sh
# Runs the cgroup v2 end-to-end tests (TestCgroupV2Sandboxes and friends)
# for real, in a QEMU VM with a cgroup v2 kernel, on a host whose own
# cgroups are v1 (or are not ours to write): nothing is written to the
# host's cgroups, everything cgroup happens inside the guest.
#
# Run by .ci/run after `make image-test`, not by `make test`: it installs
# packages (qemu-system-x86, linux-image-amd64, busybox-static), needs
# root, and takes minutes (about 3 under TCG emulation on the 2-CPU
# machines, where importing numpy and pandas alone takes ~50 s). By hand:
#
#	sudo scripts/cgroup2-vm-test.sh              # the default tests
#	RUNS='TestCgroupV2Sandboxes' scripts/cgroup2-vm-test.sh
#
# How: Debian's kernel boots with a tiny busybox initramfs that loads the
# 9p modules and mounts the host's root file system read-only over 9p
# (virtio); the guest's init (written below) mounts proc, sysfs, tmpfs
# where writes are needed and cgroup2 on /sys/fs/cgroup, enables memory,
# pids and cpu, moves itself into /pyexec (a delegated subtree, as in a
# container) and runs the prebuilt test binary there with REQUIRE_JAIL=1,
# REQUIRE_CGROUP2=1 and REQUIRE_CGROUP2_CPU=1. The test output comes back over a second,
# writable 9p share. The guest has no network device.
#
# Environment:
#	VM_DIR         work directory for the kernel initramfs, test binary and
#	               output (default /opt/cg2vm; never inside the repository)
#	RUNS           -test.run patterns, separated by newlines, one test
#	               binary run each (default: the cgroup tests and
#	               TestMemoryBound). 'TestService/^bwrap$/^fork$' passes
#	               there too, except that under TCG its case with
#	               timeout_ms 300 may time out before its first print
#	VM_ACCEL       tcg (default) or kvm (-enable-kvm -cpu host: only where
#	               the host's KVM can boot a stock kernel; a PVM-only nested
#	               KVM hangs right after "Probing EDD")
#	VM_TIMEOUT     seconds before the VM is killed (default 3600)
#	START_TIMEOUT  how long a zygote may take to import the preload modules
#	               in the guest (default 300s; TCG is slow)
#	SKIP_INSTALL=1 do not call apt-get
#
# Exits 0 only when every test run in the guest passed.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
VM_DIR=${VM_DIR:-/opt/cg2vm}
VM_ACCEL=${VM_ACCEL:-tcg}
VM_TIMEOUT=${VM_TIMEOUT:-3600}
START_TIMEOUT=${START_TIMEOUT:-300s}
RUNS=${RUNS:-'TestCgroupV2Sandboxes|TestCgroupRequired
TestMemoryBound
TestUsageCountsEveryProcess'}

case "$VM_DIR" in
"$repo" | "$repo"/*)
	echo "cgroup2-vm-test: VM_DIR must be outside the repository" >&2
	exit 2
	;;
esac
if [ "$(id -u)" != 0 ]; then
	echo "cgroup2-vm-test: run as root (apt-get, and the guest runs the tests as root)" >&2
	exit 2
fi

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
	"$repo/scripts/install-deps.sh"
	missing=""
	for p in qemu-system-x86 linux-image-amd64 busybox-static; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "cgroup2-vm-test: installing$missing"
		apt-get update -qq
		# shellcheck disable=SC2086 # one word per package
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
	fi
fi

# The kernel linux-image-amd64 depends on, e.g. linux-image-6.1.0-57-amd64.
kver=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | sed -n 's/.*linux-image-\([0-9][^ ,]*-amd64\).*/\1/p')
kernel=/boot/vmlinuz-$kver
modules=/lib/modules/$kver
if [ -z "$kver" ] || [ ! -r "$kernel" ] || [ ! -d "$modules" ]; then
	echo "cgroup2-vm-test: no Debian kernel found (linux-image-amd64 installed?)" >&2
	exit 1
fi
busybox=$(command -v busybox)
# ldd fails on a static binary: the initramfs has no libraries.
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
	echo "cgroup2-vm-test: $busybox is not static (install busybox-static)" >&2
	exit 1
fi

mkdir -p "$VM_DIR/out"
rm -f "$VM_DIR"/out/*

echo "cgroup2-vm-test: building the test binary"
(cd "$repo" && go test -c -o "$VM_DIR/pyexecd.test" ./cmd/pyexecd)

echo "cgroup2-vm-test: building the initramfs (kernel $kver)"
initramfs=$(mktemp -d)
trap 'rm -rf "$initramfs"' EXIT
mkdir -p "$initramfs/bin" "$initramfs/proc" "$initramfs/sys" "$initramfs/dev" "$initramfs/newroot" "$initramfs/mods"
cp "$busybox" "$initramfs/bin/busybox"
# In dependency order (modules.dep of Debian's 6.1 kernel).
mods="netfs fscache 9pnet virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci 9pnet_virtio 9p"
for m in $mods; do
	f=$(find "$modules/kernel" -name "$m.ko*" | head -n 1)
	if [ -n "$f" ]; then
		cp "$f" "$initramfs/mods/"
	fi # absent: built into this kernel
done
cat >"$initramfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $mods; do
	for f in /mods/\$m.ko*; do
		[ -e "\$f" ] && { insmod "\$f" || echo "initramfs: insmod \$f failed"; }
	done
done
# virtio devices probe asynchronously: retry the mount for a while.
for i in \$(seq 1 100); do
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /newroot 2>/dev/null && break
	sleep 0.1
done
grep -q " /newroot " /proc/mounts || { echo "initramfs: cannot mount the host's root over 9p"; echo o >/proc/sysrq-trigger; sleep 60; }
umount /proc /sys /dev
exec switch_root /newroot $VM_DIR/init
EOF
chmod +x "$initramfs/init"
(cd "$initramfs" && find . | cpio -o -H newc 2>/dev/null | gzip) >"$VM_DIR/initramfs.cpio.gz"

# The guest's PID 1, run from the host's root (read-only in the guest).
cat >"$VM_DIR/init" <<EOF
#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
for d in /tmp /run /var/tmp /root; do mount -t tmpfs tmpfs \$d; done
chmod 1777 /tmp /var/tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out $VM_DIR/out
ip link set lo up 2>/dev/null || busybox ifconfig lo up
/bin/sh $VM_DIR/guest-run.sh >/dev/ttyS0 2>&1 </dev/null
sync
echo o >/proc/sysrq-trigger
sleep 60
EOF
chmod +x "$VM_DIR/init"

cat >"$VM_DIR/guest-run.sh" <<EOF
OUT=$VM_DIR/out
echo "guest: kernel \$(uname -r), \$(nproc) cpus, \$(grep MemTotal /proc/meminfo)"
echo "guest: cgroup2 root controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)"
# A delegated subtree, as a systemd Delegate=yes unit has: its own group,
# marked trusted.delegate, holding the service's process alone.
echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/pyexec
/usr/bin/python3 -c "import os; os.setxattr('/sys/fs/cgroup/pyexec', 'trusted.delegate', b'1')"
echo "guest: /sys/fs/cgroup/pyexec made, controllers there: \$(cat /sys/fs/cgroup/pyexec/cgroup.controllers)"
[ -e /proc/sys/kernel/unprivileged_userns_clone ] && echo 1 >/proc/sys/kernel/unprivileged_userns_clone
echo 65536 >/proc/sys/user/max_user_namespaces
cd $repo/cmd/pyexecd
RC=0
n=0
while read -r RUN; do
	[ -n "\$RUN" ] || continue
	n=\$((n + 1))
	START=\$(date +%s)
	# The test process alone in the service's group; once a run has set
	# the group up, the next starts where the service then lives, in its
	# server/ group (as a restarted service would).
	CG=/sys/fs/cgroup/pyexec
	grep -q . \$CG/cgroup.subtree_control && CG=\$CG/server  # cgroupfs files all have size 0: read them
	sh -c "echo \\\$\\\$ >\$CG/cgroup.procs && exec env -i PATH=\$PATH HOME=/root TMPDIR=/tmp REQUIRE_JAIL=1 REQUIRE_CGROUP2=1 REQUIRE_CGROUP2_CPU=1 PYEXEC_TEST_START_TIMEOUT=$START_TIMEOUT $VM_DIR/pyexecd.test -test.v -test.run '\$RUN' -test.timeout 30m" >\$OUT/test-\$n.log 2>&1
	rc=\$?
	[ \$rc -eq 0 ] || RC=\$rc
	echo "guest: run \$n (\$RUN) exited \$rc after \$((\$(date +%s) - START))s"
done <\$OUT/runs
echo "\$RC" >\$OUT/rc
EOF
printf '%s\n' "$RUNS" >"$VM_DIR/out/runs"

case "$VM_ACCEL" in
kvm) accel="-enable-kvm -cpu host" ;;
tcg) accel="-accel tcg,thread=multi -cpu max" ;;
*)
	echo "cgroup2-vm-test: VM_ACCEL must be tcg or kvm" >&2
	exit 2
	;;
esac

echo "cgroup2-vm-test: booting ($VM_ACCEL); the console goes to $VM_DIR/console.log"
start=$(date +%s)
# shellcheck disable=SC2086
timeout "$VM_TIMEOUT" qemu-system-x86_64 $accel -m 4096 -smp 2 -nographic -no-reboot -nic none \
	-kernel "$kernel" -initrd "$VM_DIR/initramfs.cpio.gz" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=$VM_DIR/out,mount_tag=out,security_model=none" \
	-append "console=ttyS0 panic=-1 loglevel=4" </dev/null >"$VM_DIR/console.log" 2>&1 || true
echo "cgroup2-vm-test: the VM ran $(($(date +%s) - start))s"

grep '^guest:' "$VM_DIR/console.log" || true
for log in "$VM_DIR"/out/test-*.log; do
	[ -e "$log" ] || continue
	echo "== $log"
	grep -vE '^ +\{"level":"debug"' "$log" | grep -E '^ *(=== RUN|--- |PASS|FAIL|ok|panic|[A-Za-z0-9_]+_test\.go:)' || true
done
rc=$(cat "$VM_DIR/out/rc" 2>/dev/null || echo none)
if [ "$rc" != 0 ]; then
	echo "cgroup2-vm-test: FAILED (guest result: $rc); see $VM_DIR/console.log and $VM_DIR/out/" >&2
	exit 1
fi
echo "cgroup2-vm-test: passed"
