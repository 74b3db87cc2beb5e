#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Last script of `make check-debug`, on the debug kernel, after every other selftest: the debug
# checks were on for the whole run (lockdep was not switched off by an earlier report, KFENCE
# samples), dm_rust unloads, and kmemleak finds nothing unreferenced. On another kernel (Debian's,
# which has none of these checks) the tests skip, saying so.
. "$(dirname "$0")/lib.sh"

KMEMLEAK=/sys/kernel/debug/kmemleak
CONFIG=/boot/config-$(uname -r)

debug_kernel_only() {
	case $(uname -r) in
	*-dmrust-debug) ;;
	*) skip "kernel $(uname -r) is not the debug flavour (make check-debug boots it)" ;;
	esac
}

# The kernel has every check the debug flavour promises, and they are still active.
test_debug_checks_active() {
	local opt
	debug_kernel_only
	[ -r "$CONFIG" ] || fail "no $CONFIG in the root filesystem"
	for opt in KASAN PROVE_LOCKING DEBUG_ATOMIC_SLEEP KFENCE DEBUG_KMEMLEAK DEBUG_OBJECTS_WORK \
		RUST_DEBUG_ASSERTIONS; do
		grep -qx "CONFIG_$opt=y" "$CONFIG" || fail "CONFIG_$opt is not set in $CONFIG"
	done
	# lockdep switches itself off after its first report, or when anything taints the kernel
	# (a WARNING, a KASAN report): then later locking errors go unseen.
	grep -Eq '^ *debug_locks: +1$' /proc/lockdep_stats ||
		fail "lockdep is off ($(grep debug_locks /proc/lockdep_stats | tr -s ' ')); taint $(cat /proc/sys/kernel/tainted): an earlier report or taint switched it off"
	[ "$(cat /sys/module/kfence/parameters/sample_interval)" != 0 ] || fail "KFENCE is not sampling"
	[ -e "$KMEMLEAK" ] || fail "no $KMEMLEAK"
	echo "$(uname -r): KASAN, lockdep (still on), atomic-sleep checks, KFENCE, kmemleak, debugobjects, Rust debug assertions"
}

# With no device of ours left, the module unloads and its targets are gone.
test_dm_rust_unloads() {
	local dev=rs_leak_check lo
	if ! grep -qw '^dm_rust' /proc/modules; then
		# Earlier scripts unloaded it already: load it and use it once, so that this unload is
		# one after I/O.
		load_module
		lo=$(make_loop 4)
		dmsetup create "$dev" --table "0 8192 linear-rs $lo 0"
		dd if=/dev/urandom of="/dev/mapper/$dev" bs=4096 count=256 oflag=direct conv=fsync status=none
		dd if="/dev/mapper/$dev" of=/dev/null bs=4096 iflag=direct status=none
		dmsetup remove "$dev"
	fi
	if ! out=$(rmmod dm_rust 2>&1); then
		echo "device-mapper tables:"
		dmsetup table 2>&1 | sed 's/^/  /'
		fail "rmmod dm_rust: $out (refcount $(cat /sys/module/dm_rust/refcnt 2>/dev/null))"
	fi
	grep -qw '^dm_rust' /proc/modules && fail "dm_rust is still loaded after rmmod"
	dmsetup targets | grep -E '^(linear-rs|verity-rs) ' && fail "targets still registered after rmmod"
	echo "dm_rust unloaded; no target of ours registered"
}

# After the run and the unload, kmemleak finds no unreferenced object. (run_guest.sh cleared what
# it suspected at boot, so this is what the selftests left behind.)
test_kmemleak_clean() {
	local report n
	debug_kernel_only
	[ -w "$KMEMLEAK" ] || fail "no $KMEMLEAK"
	# kmemleak reports only objects older than 5 s; scan twice, some seconds apart.
	sleep 6
	echo scan >"$KMEMLEAK"
	sleep 6
	echo scan >"$KMEMLEAK"
	report=$(cat "$KMEMLEAK")
	if [ -n "$report" ]; then
		n=$(grep -c '^unreferenced object' <<<"$report")
		printf '%s\n' "$report" | head -n 400
		fail "kmemleak: $n unreferenced objects"
	fi
	echo "kmemleak: no unreferenced object"
}

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null || true
ktap_plan 3
run_test debug_checks_active test_debug_checks_active
run_test dm_rust_unloads test_dm_rust_unloads
run_test kmemleak_clean test_kmemleak_clean
ktap_finish
