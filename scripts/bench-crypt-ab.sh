#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side (not a test): scripts/bench-crypt.sh once per module build given, in the order given,
# dm_rust unloaded and the next build loaded between them, so that builds of crypt-rs compare in
# one guest, each against the kernel's dm-crypt measured in the same pass. Each pass writes
# build/ab/<module name>.txt. The BENCH_* settings of bench-crypt.sh apply to every pass.
# Usage (host): scripts/vm.sh scripts/bench-crypt-ab.sh build/ab/one.ko build/ab/two.ko ...
set -uo pipefail
cd /dm-rust
mkdir -p build/ab
modprobe -a dm-mod dm-bufio dm-crypt loop
status=0
for ko in "$@"; do
	name=$(basename "$ko" .ko)
	if grep -q '^dm_rust ' /proc/modules; then
		rmmod dm_rust || { echo "ab: cannot unload dm_rust before $name" >&2; exit 1; }
	fi
	insmod "$ko" || { echo "ab: cannot load $ko" >&2; status=1; continue; }
	echo "## $name ($(date -u +%H:%M:%S))"
	BENCH_OUT=build/ab/$name.txt scripts/bench-crypt.sh || { echo "ab: the pass with $name failed" >&2; status=1; }
done
exit $status
