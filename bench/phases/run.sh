#!/bin/sh
# Runs phases.py in the same bubblewrap jail, with the same environment, as
# the server runs its zygote, as uid 65534 (what the server does when it
# runs as root). Usage: bench/phases/run.sh [sandboxes [held [python dir]]]
# (the python dir of another checkout measures that commit's sandbox code),
# or bench/phases/run.sh namespaces [clones per set] for namespaces.py.
set -eu
cd "$(dirname "$0")/../.."
script=phases.py
if [ "${1:-}" = namespaces ]; then
	script=namespaces.py
	shift
	set -- "${1:-100}" "" python
fi
n="${1:-60}"
held="${2:-4}"
pydir="$(cd "${3:-python}" && pwd)"
as_nobody=""
if [ "$(id -u)" = 0 ]; then as_nobody="setpriv --reuid=65534 --regid=65534 --clear-groups"; fi
thp=""
for f in /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/hpage_pmd_size; do
	if [ -e "$f" ]; then thp="$thp --ro-bind $f $f"; fi
done
# shellcheck disable=SC2086
exec $as_nobody bwrap --unshare-all --unshare-user --die-with-parent --new-session --cap-drop ALL \
	--proc /proc --dev /dev --dir /tmp \
	--ro-bind /usr /usr --ro-bind /etc/alternatives /etc/alternatives --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
	$thp --ro-bind "$pydir" /python --ro-bind "$PWD/bench/phases" /phases \
	--remount-ro /dev --remount-ro / --chdir /tmp --clearenv \
	--setenv PATH /usr/bin:/bin --setenv LANG C.UTF-8 \
	--setenv OPENBLAS_NUM_THREADS 1 --setenv OMP_NUM_THREADS 1 --setenv MKL_NUM_THREADS 1 \
	--setenv GLIBC_TUNABLES glibc.malloc.hugetlb=1 --setenv PYTHONMALLOC malloc \
	--setenv PHASES_SCRIPT "${PHASES_SCRIPT:-hello}" --setenv PHASES_PREWARM "${PHASES_PREWARM:-0}" \
	-- /usr/bin/python3 -s -P -B "/phases/$script" /python "$n" ${held:+"$held"}
