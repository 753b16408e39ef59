#!/bin/sh
# Runs phases.py in the same bubblewrap jail the server uses, as uid 65534
# (what the server does when it runs as root). Usage: bench/phases/run.sh [iterations]
set -eu
cd "$(dirname "$0")/../.."
n="${1:-30}"
as_nobody=""
if [ "$(id -u)" = 0 ]; then as_nobody="setpriv --reuid=65534 --regid=65534 --clear-groups"; fi
exec $as_nobody bwrap --unshare-all --unshare-user --die-with-parent --new-session --cap-drop ALL \
	--proc /proc --dev /dev --dir /tmp \
	--ro-bind /usr /usr --ro-bind /etc/alternatives /etc/alternatives --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
	--ro-bind "$PWD/python" /python --ro-bind "$PWD/bench/phases" /phases \
	--remount-ro /dev --remount-ro / --chdir /tmp --clearenv \
	--setenv OPENBLAS_NUM_THREADS 1 --setenv OMP_NUM_THREADS 1 --setenv MKL_NUM_THREADS 1 \
	--setenv GLIBC_TUNABLES glibc.malloc.hugetlb=1 \
	-- /usr/bin/python3 -I -B /phases/phases.py /python "$n"
