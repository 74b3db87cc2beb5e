#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the lab's kernel in a guest, runs the selftests there (selftests/run_guest.sh) and exits
# non-zero unless every test passed. Needs build/dm_rust.ko (make module).
# Usage: scripts/run-selftests.sh [test scripts...]   (default: all TEST_PROGS)
# The guest boots through OVMF with the test certificate in db (scripts/ovmf.sh), which the
# signature tests need (IPE policies, dm-verity root hash signatures); VM_OVMF=0 boots without it.
# FLAVOUR=debug boots the lab's debug kernel with build/debug/dm_rust.ko (make check-debug); the
# results, log and kernel log then go to build/debug/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=build${FLAVOUR:+/$FLAVOUR}
[ -f "$out/dm_rust.ko" ] || { echo "run-selftests: $out/dm_rust.ko missing (make module)" >&2; exit 1; }
result=$out/selftests.result
rm -f "$result"
start=$(date +%s)
VM_OVMF=${VM_OVMF:-1} scripts/vm.sh env RESULTS="/dm-rust/$result" selftests/run_guest.sh "$@" 2>&1 |
	tee "$out/selftests.log"
echo "# guest run took $(( $(date +%s) - start ))s"
if [ ! -s "$result" ]; then
	echo "run-selftests: the guest produced no result (boot failure? see $out/selftests.log)"
	echo "0 passed, 1 failed"
	exit 1
fi
read -r _ _ failed _ <"$result"
[ "$failed" = 0 ]
