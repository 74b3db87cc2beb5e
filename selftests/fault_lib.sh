# SPDX-License-Identifier: GPL-2.0
# Helpers of the fault-injection and edge selftests (source after lib.sh): the kernel's own
# targets (error, zero, linear, flakey, delay) stacked below ours, device statistics, deadlines.
# Every device made here is named rs_* and every file lives in $SCRATCH as loop.*, so that lib.sh's
# cleanup_devices removes them.

# The target under test for the linear scripts: linear-rs (ours), or the kernel's linear as a
# reference run of the tests themselves (FAULT_LINEAR_TARGET=linear).
FAULT_LINEAR_TARGET=${FAULT_LINEAR_TARGET:-linear-rs}

# fault_modules: device-mapper's own targets used below ours.
fault_modules() {
	modprobe -a dm-mod dm-flakey dm-delay dm-zero loop 2>/dev/null ||
		fail "cannot load dm-flakey, dm-delay or dm-zero"
}

# sectors <dev>: size in 512-byte sectors.
sectors() {
	blockdev --getsz "$1"
}

# dm_name <dev>: the kernel name (dm-N, loopN) of a block device path.
kname() {
	basename "$(readlink -f "$1")"
}

# stat_field <dev> <n>: field n of /sys/block/<dev>/stat (1 = reads completed; 16 = flushes
# completed, see Documentation/block/stat.rst).
stat_field() {
	awk -v n="$2" '{print $n}' "/sys/block/$(kname "$1")/stat"
}

# queue_attr <dev> <attribute>: /sys/block/<dev>/queue/<attribute>.
queue_attr() {
	cat "/sys/block/$(kname "$1")/queue/$2"
}

# fscratch <name>: a new empty file in $SCRATCH (removed by cleanup_devices).
fscratch() {
	mktemp "$SCRATCH/loop.$1.XXXXXX"
}

# fill_random <dev> <bytes>: writes random bytes at the start of the device through direct I/O;
# prints the path of a file holding them.
fill_random() {
	local f
	f=$(fscratch ref)
	head -c "$2" /dev/urandom >"$f"
	dd if="$f" of="$1" bs=1M oflag=direct conv=notrunc status=none 2>"$SCRATCH/fill.err" ||
		fail "writing $2 bytes to $1: $(cat "$SCRATCH/fill.err")"
	echo "$f"
}

# expect_io_error <what> <command...>: the command fails, and says "Input/output error".
expect_io_error() {
	local what=$1
	shift
	if "$@" >"$SCRATCH/eio.out" 2>"$SCRATCH/eio.err"; then
		fail "$what succeeded"
	fi
	grep -q 'Input/output error' "$SCRATCH/eio.err" || fail "$what: not EIO: $(head -c 300 "$SCRATCH/eio.err")"
}

# dd_read <dev> <block size> <first block> <count> <output>: a direct read, bounded in time so
# that a hang is a failure and not a stuck guest.
dd_read() {
	timeout 120 dd if="$1" bs="$2" skip="$3" count="$4" iflag=direct of="$5" status=none
}

# dd_write <dev> <block size> <first block> <input> [count]
dd_write() {
	timeout 120 dd if="$4" of="$1" bs="$2" seek="$3" ${5:+count=$5} oflag=direct conv=notrunc status=none
}

# wait_until <seconds> <command...>: polls the command every 0.1 s until it succeeds; fails
# the test when the deadline passes.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $deadline ] || fail "still not true after the deadline: $*"
		sleep 0.1
	done
}

# dm_open <name>: someone has the device open.
dm_open() {
	[ "$(dmsetup info -c --noheadings -o open "$1" 2>/dev/null | tr -d ' ')" -gt 0 ] 2>/dev/null
}

dm_absent() {
	! dmsetup info "$1" >/dev/null 2>&1
}

# A mark in the kernel log, and what came after it.
fmark() {
	local m="dm-rust fault selftest mark $RANDOM$RANDOM"
	echo "$m" >/dev/kmsg
	echo "$m"
}
fsince() {
	dmesg | sed -n "/$1/,\$p"
}

# kernel_log_clean_since <mark>: no warning, oops or hung task after the mark.
kernel_log_clean_since() {
	local bad
	bad=$(fsince "$1" | grep -E 'WARNING:|BUG:|Oops|blocked for more than|soft lockup|rcu.*stall|general protection' | head -n 5)
	[ -z "$bad" ] || fail "kernel log: $bad"
}

# set_param <file> <value>: writes a global setting and registers its restoration at the end of the
# script (tests run in subshells; the caller's EXIT trap restores it even when a test fails).
FAULT_RESTORE=$SCRATCH/restore.sh
save_param() {
	local f=$1
	[ -f "$FAULT_RESTORE" ] || : >"$FAULT_RESTORE"
	grep -q " $f\$" "$FAULT_RESTORE" || printf 'echo %q > %s\n' "$(cat "$f")" "$f" >>"$FAULT_RESTORE"
}
set_param() {
	save_param "$1"
	echo "$2" >"$1"
}
restore_params() {
	[ -f "$FAULT_RESTORE" ] || return 0
	sh "$FAULT_RESTORE"
	rm -f "$FAULT_RESTORE"
}

# build_helper <name>: the program of selftests/<name>.c: the one scripts/build.sh compiled
# (build/helpers/), or, if it is missing or older than the source, compiled here into $SCRATCH
# (the guest has gcc); prints its path.
build_helper() {
	local out=$SCRATCH/loop.$1 built=${DM_RUST_BUILD:-/dm-rust/build}/helpers/$1
	[ -x "$built" ] && [ "$built" -nt "$1.c" ] && { echo "$built"; return 0; }
	[ -x "$out" ] && [ "$out" -nt "$1.c" ] && { echo "$out"; return 0; }
	gcc -O2 -Wall -pthread -o "$out" "$1.c" 2>"$SCRATCH/gcc.err" ||
		fail "cannot compile $1.c: $(head -c 500 "$SCRATCH/gcc.err")"
	echo "$out"
}
