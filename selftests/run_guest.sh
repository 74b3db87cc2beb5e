#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs the dm-rust selftests inside the guest: every TEST_PROGS script of the Makefile (or those
# named as arguments), then a check that the kernel log has no WARNING, BUG, Oops, panic,
# lockdep, KASAN, KFENCE or debugobjects report. Prints each script's KTAP, then "N passed, N failed, N skipped".
# Results also go to $RESULTS (default /dm-rust/build/selftests.result) for the host, and the
# kernel log of the run to kernel.log beside it.
cd "$(dirname "$0")" || exit 1
RESULTS=${RESULTS:-/dm-rust/build/selftests.result}
progs=("$@")
[ ${#progs[@]} -gt 0 ] || read -ra progs <<<"$(sed -n 's/^TEST_PROGS := //p' Makefile)"

pass=0 failed=0 skipped=0
count() {
	local line
	while IFS= read -r line; do
		printf '%s\n' "$line"
		case $line in
		"ok "*"# SKIP"*) skipped=$((skipped + 1)) ;;
		"ok "*) pass=$((pass + 1)) ;;
		"not ok "*) failed=$((failed + 1)) ;;
		esac
	done
}

dmesg -C
# The debug kernel (make check-debug) has kmemleak: forget what it suspects from the boot, so that
# leak_check.sh reports only what the selftests leave behind.
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
if [ -w /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak
	echo clear >/sys/kernel/debug/kmemleak
fi
# The kernel log of the run, kept script by script (a long run may overflow the ring buffer).
klog=$(mktemp)
# Per script (selftests/settings); the debug kernel (KASAN, lockdep) runs several times slower.
limit=2400
case $(uname -r) in *-dmrust-debug) limit=7200 ;; esac
for p in "${progs[@]}"; do
	echo "# selftest: $p"
	# A script that dies, times out or does not run all it planned counts as one failure more.
	count < <(timeout "$limit" "./$p" 2>&1; rc=$?; [ $rc -eq 0 ] || echo "not ok - $p exited with $rc")
	dmesg -c >>"$klog"
done

echo "# selftest: kernel log"
dmesg >>"$klog"
cp "$klog" "$(dirname "$RESULTS")/kernel.log" && chmod 644 "$(dirname "$RESULTS")/kernel.log" || true
bad=$(grep -E 'WARNING:|BUG:|Oops|Kernel panic|possible recursive locking|circular locking|KASAN|KFENCE|ODEBUG|UBSAN|general protection fault|RIP:' "$klog" | head -n 20)
if [ -n "$bad" ]; then
	printf '# %s\n' "$bad"
	count <<<"not ok 1 kernel_log_clean"
else
	count <<<"ok 1 kernel_log_clean"
fi

summary="$pass passed, $failed failed, $skipped skipped"
echo "$summary" >"$RESULTS"
echo "$summary"
