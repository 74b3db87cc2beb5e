#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# In the guest (started by scripts/check-mutants.sh): for each "name:script1,script2,...[:test1,...]"
# argument, points the selftests at build/mutants/<name>.ko (DM_RUST_KO) and runs the scripts in
# order, stopping at the first failing test. Appends "<name> killed by <script>: <test>" or
# "<name> survived" (for the baseline: "baseline passed" or "baseline failed ...") to
# build/mutants/results; build/mutants/current names the one in progress (the host counts it as
# killed if the guest dies). Exits 3 when the guest cannot go on cleanly (a device or the module
# stays busy), so that the host boots a fresh guest for the rest.
set -u
top=/dm-rust
out=$top/build/mutants
cd "$top/selftests" || exit 1
. ./lib.sh
SCRIPT_TIMEOUT=${SCRIPT_TIMEOUT:-1500}

# Puts the guest back as a fresh boot would have it: no test devices, no dm_rust, no settings.
reset_guest() {
	[ -f "$SCRATCH/restore.sh" ] && sh "$SCRATCH/restore.sh" && rm -f "$SCRATCH/restore.sh"
	timeout 60 bash -c '. ./lib.sh; cleanup_devices' >/dev/null 2>&1
	rm -f /etc/modprobe.d/dm-rust.conf /etc/modprobe.d/dm-rust-selftest-location.conf
	modprobe -r scsi_debug 2>/dev/null
	rmmod dm_rust 2>/dev/null
	rmmod dm_verity 2>/dev/null
	! grep -q '^dm_rust ' /proc/modules
}

# run_script <script> <log>: runs it in its own process group; prints the first "not ok" line
# (after stopping the script) or, if it fails without one, its exit status. Silent on success.
run_script() {
	local s=$1 log=$2 pid line verdict=""
	setsid timeout "$SCRIPT_TIMEOUT" "./$s" >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		line=$(grep -m1 '^not ok' "$log")
		if [ -n "$line" ]; then
			verdict=$line
			kill -TERM -- "-$pid" 2>/dev/null
			sleep 1
			kill -KILL -- "-$pid" 2>/dev/null
			break
		fi
		sleep 0.5
	done
	wait "$pid"
	local rc=$?
	[ -n "$verdict" ] || verdict=$(grep -m1 '^not ok' "$log")
	if [ -n "$verdict" ]; then
		echo "$verdict"
	elif [ $rc -ne 0 ]; then
		echo "exit status $rc"
	fi
}

# --list: the items are the lines of build/mutants/todo (check-mutants' way: the kernel command
# line that carries the arguments into the guest is too short for them all).
items=("$@")
[ "${1:-}" != --list ] || mapfile -t items <"$out/todo"
dmesg -n 1 2>/dev/null
for item in "${items[@]}"; do
	name=${item%%:*}
	rest=${item#*:}
	IFS=, read -ra scripts <<<"${rest%%:*}"
	# A third field: the only tests to run (the mutant's "Tests:" line).
	only=
	[[ $rest != *:* ]] || only=${rest#*:}
	export SELFTEST_ONLY=${only//,/ }
	echo "$name" >"$out/current"
	reset_guest || { echo "# cannot unload dm_rust before $name"; rm -f "$out/current"; exit 3; }
	export DM_RUST_KO=$out/$name.ko
	mark="dm-rust mutant $name $RANDOM"
	echo "$mark" >/dev/kmsg
	result=""
	t=$SECONDS
	for s in "${scripts[@]}"; do
		v=$(run_script "$s" "$out/$name.$s.log")
		if [ -n "$v" ]; then
			result="killed by $s: $v"
			break
		fi
	done
	bad=$(dmesg | sed -n "/$mark/,\$p" | grep -E 'WARNING:|BUG:|Oops|Kernel panic|general protection|blocked for more than|soft lockup' | head -n 1)
	[ -z "$result" ] && [ -n "$bad" ] && result="killed by the kernel log: $bad"
	if [ "$name" = baseline ]; then
		if [ -n "$result" ]; then result="failed: ${result#killed by }"; else result=passed; fi
		[ -z "$bad" ] || result="failed: kernel log: $bad"
	else
		[ -n "$result" ] || result=survived
	fi
	echo "$name $result ($((SECONDS - t)) s)" | tee -a "$out/results"
	rm -f "$out/current"
	reset_guest || { echo "# dm_rust stays loaded after $name: a fresh guest is needed"; exit 3; }
done
