#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the lab's kernel in a guest, runs the selftests there (selftests/run_guest.sh) and exits
# non-zero unless every test passed.
# Usage: scripts/run-selftests.sh [--impl=rust|kernel] [test scripts...]
#   --impl=rust    (default) our targets, all TEST_PROGS; needs build/dm_rust.ko and build/dm_rust_test_inline.ko (make module)
#   --impl=kernel  the kernel's own C targets as a reference, all REFERENCE_PROGS
# The implementation under test is chosen by this argument only (`make check` passes rust,
# `make check-reference` kernel).
#
# Files (NAME is selftests, or reference for --impl=kernel):
#   build/NAME.log          the run's output (KTAP)
#   build/NAME.console.log  the guest's kernel console, from the first line of its boot
#   build/selftests.<impl>.progress  the guest's progress, test by test (the host reads it)
#   build/NAME.noresult.<time>.log, .console.log   copies kept of a run that gave no result
# A guest that makes no progress (no test starting or ending) for STALL_TIMEOUT seconds (default
# 900; the guest itself kills a test after 600 s), or that does not start the tests within
# BOOT_TIMEOUT seconds (default 300; 1200 with FLAVOUR=debug, whose kernel took over 5 minutes to
# reach the first test under emulation on a busy host) of booting, is killed, and the run fails naming the test it was
# in, with the last kernel messages.
# FLAVOUR=debug boots the lab's debug kernel with build/debug/dm_rust.ko (make check-debug); every
# file above is then in build/debug/.
# The guest boots through OVMF with the test certificate in db (scripts/ovmf.sh), which the
# signature tests need (IPE policies, dm-verity root hash signatures); VM_OVMF=0 boots without it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=build${FLAVOUR:+/$FLAVOUR}
impl=rust
case ${1:-} in
--impl=*)
	impl=${1#--impl=}
	shift
	;;
esac
case $impl in
rust)
	name=selftests
	for ko in dm_rust.ko dm_rust_test_inline.ko; do
		[ -f "$out/$ko" ] || { echo "run-selftests: $out/$ko missing (make module)" >&2; exit 1; }
	done
	;;
kernel) name=reference ;;
*)
	echo "usage: $0 [--impl=rust|kernel] [test scripts...]" >&2
	exit 2
	;;
esac
if [ "${FLAVOUR:-}" = debug ]; then BOOT_TIMEOUT=${BOOT_TIMEOUT:-1200}; else BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}; fi
STALL_TIMEOUT=${STALL_TIMEOUT:-900}
mkdir -p "$out"
# Two runs in one checkout would share the files below (one read the other's result once): the
# second is refused. Guests of different checkouts queue on the lab's lock instead (vm.sh).
exec 6>"$out/.run-selftests.lock"
flock -n 6 || { echo "run-selftests: another run uses $out in this checkout; wait for it to end" >&2; exit 1; }
log=$out/$name.log
console=$out/$name.console.log
result=$out/selftests.$impl.result
progress=$out/selftests.$impl.progress
started=$out/.vm.$impl.started
echo "run-selftests: implementation under test: $impl"
start=$(date +%s)

# boot: one guest run; sets hung (empty unless the host had to kill it) and vm_rc.
boot() {
	rm -f "$result" "$progress" "$started" "$console"
	VM_OVMF=${VM_OVMF:-1} VM_CONSOLE=$console VM_STARTED=$started \
		setsid scripts/vm.sh env DM_RUST_BUILD="/dm-rust/$out" selftests/run_guest.sh --impl="$impl" "$@" \
		> >(tee "$log") 2>&1 &
	vm=$!
	hung=
	while kill -0 "$vm" 2>/dev/null; do
		sleep 2
		[ -s "$started" ] || continue # still waiting for another checkout's guest
		now=$(date +%s)
		if [ ! -s "$progress" ]; then
			[ $((now - $(cat "$started"))) -lt "$BOOT_TIMEOUT" ] ||
				hung="the guest did not start the tests within $BOOT_TIMEOUT s"
			# A panic while booting may leave the guest spinning: no need to wait for the timeout.
			grep -q 'Kernel panic' "$console" 2>/dev/null && hung="the guest's kernel panicked while booting"
		elif [ $((now - $(stat -c %Y "$progress"))) -ge "$STALL_TIMEOUT" ]; then
			hung="no progress for $STALL_TIMEOUT s, in: $(tail -n 1 "$progress")"
		fi
		if [ -n "$hung" ]; then
			kill -TERM -- -"$vm" 2>/dev/null
			sleep 5
			kill -KILL -- -"$vm" 2>/dev/null
			break
		fi
	done
	wait "$vm" 2>/dev/null
	vm_rc=$?
	vm=
	sleep 0.2 # tee
}

# keep <why>: keeps the output and console of a run that gave no result.
keep() {
	local k
	k=$out/$name.noresult.$(date -u +%Y%m%dT%H%M%S)
	cp "$log" "$k.log" 2>/dev/null
	cp "$console" "$k.console.log" 2>/dev/null
	echo "run-selftests: $1; output and kernel console kept in $k.log and $k.console.log"
}

# The guest runs in a session of its own (for the kills above): end it with this script.
vm=
trap '[ -z "$vm" ] || kill -TERM -- -"$vm" 2>/dev/null' EXIT
trap 'exit 130' INT TERM
boot "$@"
# Under software emulation with two vCPUs, about one boot in ten or twenty dies within its first
# seconds, before any test: "Oops: int3" in the middle of the kernel's own code patching (a
# breakpoint the other vCPU still executes after the patch is done: QEMU's TCG and cross-modifying
# code), then a panic. No test had started, so one more boot hides nothing; it is said and kept.
# A panicked guest may also hang instead of exiting: the watch above then ends it.
if [ ! -s "$progress" ] && grep -q 'Kernel panic' "$console" 2>/dev/null; then
	keep "the guest's kernel crashed while booting, before any test ($(grep -m1 -E 'Oops|BUG|panic' "$console"))"
	echo "run-selftests: booting again"
	boot "$@"
fi
echo "# guest run took $(($(date +%s) - start)) s"

if [ -n "$hung" ]; then
	echo "run-selftests: guest hung: $hung"
	echo "# progress of the run:"
	tail -n 5 "$progress" | sed 's/^/#   /'
	echo "# last kernel messages:"
	grep -v '^$' "$console" 2>/dev/null | tail -n 40 | sed 's/^/#   /'
fi
if [ ! -s "$result" ]; then
	keep "the guest produced no result (vm.sh exit status $vm_rc)"
	[ -s "$progress" ] && echo "# last progress: $(tail -n 1 "$progress")"
	grep -q 'Kernel panic' "$console" 2>/dev/null && echo "# kernel: $(grep -m1 -E 'Oops|BUG|panic' "$console")"
	pass=$(grep -c '^ok ' "$log")
	failed=$(grep -c '^not ok ' "$log")
	echo "$pass passed, $((failed + 1)) failed (the run did not finish)"
	exit 1
fi
read -r _ _ failed _ <"$result"
[ "$failed" = 0 ]
