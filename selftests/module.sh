#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# dm_rust.ko as a module: loading, unloading, the target list, upstream names, refused unload.
cd "$(dirname "$0")" && . ./lib.sh

test_load_unload() {
	unload_module
	load_module
	grep -q '^dm_rust ' /proc/modules || fail "dm_rust not in /proc/modules after insmod"
	dmsetup targets | grep -q '^linear-rs ' || fail "linear-rs not registered"
	unload_module
	grep -q '^dm_rust ' /proc/modules && fail "dm_rust still loaded after rmmod"
	dmsetup targets | grep -q '^linear-rs ' && fail "linear-rs still registered after rmmod"
	load_module
}

test_targets_listed() {
	load_module
	dmsetup targets
	dmsetup targets | grep -qE '^linear-rs +v1\.0\.0$' || fail "linear-rs v1.0.0 not listed"
	dmsetup targets | grep -qE '^verity-rs +v1\.13\.0$' || fail "verity-rs v1.13.0 not listed"
}

test_upstream_names() {
	unload_module
	modprobe -r dm-verity 2>/dev/null || true
	load_module upstream_names=1
	dmsetup targets | grep -qE '^verity +v1\.13\.0$' || fail "verity not registered under its upstream name"
	dmsetup targets | grep -q '^verity-rs ' && fail "verity-rs registered as well"
	dmsetup targets | grep -q '^linear-rs ' || fail "linear-rs missing (it has no upstream name)"
	unload_module
	load_module
}

# A name clash: the kernel's dm-verity holds "verity", so ours registers under its own name
# (verity-rs), says so in one log line, and the kernel's keeps "verity".
test_registration_clash() {
	local mark="dm-rust selftest: clash $RANDOM"
	unload_module
	modprobe --ignore-install dm-verity || skip "the kernel's dm-verity module is not available"
	echo "$mark" >/dev/kmsg
	load_module upstream_names=1 || fail "dm_rust did not load beside the kernel's dm-verity"
	dmsetup targets | grep -qE '^verity-rs +v1\.13\.0$' ||
		fail "verity-rs not registered: $(dmsetup targets)"
	grep -q '^dm_verity ' /proc/modules || fail "the kernel's dm_verity is gone"
	dmesg | sed -n "/$mark/,\$p" | grep -q "target 'verity' is taken (the kernel's module is loaded): registered as 'verity-rs'" ||
		fail "no log line naming the clash"
	unload_module
	modprobe -r dm-verity
	load_module
}

test_rmmod_refused_while_used() {
	local loop
	load_module
	loop=$(make_loop 8)
	dmsetup create rs_busy --table "0 8192 linear-rs $loop 0"
	if rmmod dm_rust 2>/dev/null; then
		fail "rmmod succeeded while rs_busy uses linear-rs"
	fi
	grep -q '^dm_rust ' /proc/modules || fail "module gone"
	dmsetup remove rs_busy
	rmmod dm_rust || fail "rmmod refused after the last device went away"
	load_module
}

ktap_plan 5
run_test load_unload test_load_unload
run_test targets_listed test_targets_listed
run_test upstream_names test_upstream_names
run_test registration_clash test_registration_clash
run_test rmmod_refused_while_used test_rmmod_refused_while_used
ktap_finish
