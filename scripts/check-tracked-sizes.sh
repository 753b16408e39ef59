#!/bin/sh
# check-tracked-sizes: fails when git tracks a file over 1 MiB that is not
# on the list below. Build outputs and fetched code belong outside the tree
# (.gitignore covers the usual ones); a large file that truly belongs here
# is added to ALLOWED with the reason beside it. `make vet` runs this.
set -eu
cd "$(dirname "$0")/.."
limit=1048576
# ALLOWED: paths, one per line, each with a comment saying why. Empty today.
ALLOWED=""
over=$(git ls-files -z | xargs -0 -r stat -c '%s %n' -- | while read -r size path; do
	[ "$size" -gt "$limit" ] || continue
	printf '%s\n' "$ALLOWED" | grep -qxF "$path" && continue
	echo "$path ($size bytes)"
done)
[ -z "$over" ] && exit 0
echo "check-tracked-sizes: tracked files over $limit bytes, not on the list in $0:" >&2
echo "$over" >&2
exit 1
