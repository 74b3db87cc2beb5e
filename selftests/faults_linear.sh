#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# linear-rs under faults: flushes and FUA shown to reach the device below by its flush counter,
# I/O errors from below (the kernel's error target, one failing block, dm-flakey) returned as EIO
# without a hang, suspend/reload/resume and deferred remove while several fio jobs write, read
# and verify every byte, with slow I/O (dm-delay) in flight.
# FAULT_LINEAR_TARGET=linear runs the same tests against the kernel's linear (a reference run).
cd "$(dirname "$0")" && . ./lib.sh && . ./fault_lib.sh

T=$FAULT_LINEAR_TARGET

# A flush (fsync) and a FUA write (O_DSYNC) through the target each move the flush counter of the
# loop device below; a plain direct write does not, so the counter shows flushes and nothing else.
test_flush_reaches_device() {
	local loop data f0 f1 f2 f3 dm
	loop=$(make_loop 16)
	dmsetup create rs_lin --table "0 16384 $T $loop 4096"
	dm=/dev/mapper/rs_lin
	[ "$(queue_attr "$loop" write_cache)" = "write back" ] || fail "the loop device has no write cache"
	[ "$(queue_attr "$dm" write_cache)" = "write back" ] ||
		fail "the mapped device says '$(queue_attr "$dm" write_cache)', the device below 'write back'"
	data=$(random_file 4096)
	f0=$(stat_field "$loop" 16)
	dd_write "$dm" 4096 0 "$data"
	f1=$(stat_field "$loop" 16)
	[ "$f1" = "$f0" ] || fail "a plain direct write moved the flush counter ($f0 -> $f1)"
	timeout 60 dd if="$data" of="$dm" bs=4096 seek=1 oflag=direct conv=notrunc,fsync status=none
	f2=$(stat_field "$loop" 16)
	[ "$f2" -gt "$f1" ] || fail "fsync on the mapped device sent no flush to $loop (counter $f1 -> $f2)"
	timeout 60 dd if="$data" of="$dm" bs=4096 seek=2 oflag=direct,dsync conv=notrunc status=none
	f3=$(stat_field "$loop" 16)
	[ "$f3" -gt "$f2" ] || fail "an O_DSYNC (FUA) write sent no flush or FUA to $loop (counter $f2 -> $f3)"
	echo "flushes on $loop: plain write $f0 -> $f1, fsync -> $f2, O_DSYNC write -> $f3"
	read_at "$loop" $((4096 * 512 + 8192)) 4096 | cmp -s - "$data" || fail "the O_DSYNC write is not on $loop"
}

# Every read and write of a target over the kernel's error target fails with EIO, and returns.
test_all_io_fails() {
	local data
	data=$(random_file 65536)
	dmsetup create rs_err --table "0 8192 error"
	dmsetup create rs_lin --table "0 8192 $T /dev/mapper/rs_err 0"
	expect_io_error "a read of block 0" dd_read /dev/mapper/rs_lin 4096 0 1 "$SCRATCH/out"
	[ ! -s "$SCRATCH/out" ] || fail "a failed read returned data"
	expect_io_error "a read of the last block" dd_read /dev/mapper/rs_lin 4096 1023 1 "$SCRATCH/out"
	expect_io_error "a write" dd_write /dev/mapper/rs_lin 4096 5 "$data" 1
	expect_io_error "a buffered read" timeout 120 cat /dev/mapper/rs_lin
	expect_io_error "a 1 MiB read" dd_read /dev/mapper/rs_lin 1048576 1 1 "$SCRATCH/out"
}

# One failing 4 KiB block in the middle of the device below (linear + error + linear): that block
# and every I/O covering it fail with EIO; its neighbours read and write normally.
test_one_block_fails() {
	local loop data ref
	loop=$(make_loop 8)
	ref=$(fill_random "$loop" $((8 * 1048576)))
	data=$(random_file 4096)
	dmsetup create rs_below --table "0 800 linear $loop 0
800 8 error
808 15576 linear $loop 808"
	dmsetup create rs_lin --table "0 16384 $T /dev/mapper/rs_below 0"
	expect_io_error "a read of block 100" dd_read /dev/mapper/rs_lin 4096 100 1 "$SCRATCH/out"
	expect_io_error "a write of block 100" dd_write /dev/mapper/rs_lin 4096 100 "$data" 1
	expect_io_error "a 64 KiB read covering block 100" dd_read /dev/mapper/rs_lin 65536 6 1 "$SCRATCH/out"
	dd_read /dev/mapper/rs_lin 4096 99 1 "$SCRATCH/out" || fail "block 99 does not read"
	dd if="$ref" bs=4096 skip=99 count=1 status=none | cmp -s - "$SCRATCH/out" || fail "block 99 differs"
	dd_read /dev/mapper/rs_lin 4096 101 1 "$SCRATCH/out" || fail "block 101 does not read"
	dd if="$ref" bs=4096 skip=101 count=1 status=none | cmp -s - "$SCRATCH/out" || fail "block 101 differs"
	dd_write /dev/mapper/rs_lin 4096 101 "$data" 1 || fail "block 101 does not write"
	read_at "$loop" $((101 * 4096)) 4096 | cmp -s - "$data" || fail "the write of block 101 is not on $loop"
}

# dm-flakey below, failing all I/O one second out of two: every read either fails with EIO or
# returns the right data; both happen. The deadline is only for the test not to run forever.
test_intermittent_errors() {
	local loop ref n=0 ok=0 bad=0 blk deadline
	loop=$(make_loop 8)
	ref=$(fill_random "$loop" $((8 * 1048576)))
	dmsetup create rs_flakey --table "0 16384 flakey $loop 0 1 1"
	dmsetup create rs_lin --table "0 16384 $T /dev/mapper/rs_flakey 0"
	# dm-flakey switches every second; a minute of reads (from here, not counting the setup, which
	# is slow on a debug kernel) sees both states many times over.
	deadline=$((SECONDS + 60))
	while [ $ok -lt 5 ] || [ $bad -lt 5 ]; do
		[ $SECONDS -lt $deadline ] || fail "after $n reads: $ok good, $bad EIO; dm-flakey never switched?"
		blk=$((RANDOM % 2048))
		rm -f "$SCRATCH/out"
		if dd_read /dev/mapper/rs_lin 4096 "$blk" 1 "$SCRATCH/out" 2>"$SCRATCH/err"; then
			dd if="$ref" bs=4096 skip="$blk" count=1 status=none | cmp -s - "$SCRATCH/out" ||
				fail "block $blk read without error but differs"
			ok=$((ok + 1))
		else
			grep -q 'Input/output error' "$SCRATCH/err" || fail "block $blk: $(cat "$SCRATCH/err")"
			[ ! -s "$SCRATCH/out" ] || fail "a failed read of block $blk returned data"
			bad=$((bad + 1))
		fi
		n=$((n + 1))
	done
	echo "$n reads: $ok good, $bad EIO"
}

# fio_job <file> <device> <jobs>: several writers, each in its own region, each
# reading back and checking what it wrote while it runs (verify_backlog) and all of it at the end.
fio_job() {
	cat >"$1" <<EOF
[global]
filename=$2
direct=1
ioengine=psync
bs=4k
size=2m
offset_increment=8m
numjobs=$3
verify=crc32c
verify_backlog=32
verify_fatal=1
verify_state_save=0
do_verify=1
rw=randwrite
randrepeat=0
group_reporting=1
[writers]
EOF
}

# Writers and readers (fio, 4 jobs) run while the target, over dm-delay's slowed I/O, is suspended,
# reloaded and resumed again and again; fio checks every block it wrote.
test_suspend_reload_resume_under_fio() {
	local loop majmin job fio_pid cycles=0 table
	fault_modules
	loop=$(make_loop 40)
	majmin=$(lsblk -dno MAJ:MIN "$loop" | tr -d ' ')
	dmsetup create rs_delay --table "0 81920 delay $loop 0 5"
	table="0 65536 $T /dev/mapper/rs_delay 8192"
	dmsetup create rs_lin --table "$table"
	job=$(fscratch fio)
	fio_job "$job" /dev/mapper/rs_lin 4
	fio "$job" --output="$SCRATCH/fio.out" &
	fio_pid=$!
	# Without waiting for udev after each step: on the debug kernel udev's rules took ~25 s a
	# cycle, and fio ended after 2.
	while kill -0 "$fio_pid" 2>/dev/null; do
		dmsetup suspend --noudevsync rs_lin || fail "suspend failed"
		dmsetup reload --noudevsync rs_lin --table "$table" || fail "reload failed"
		dmsetup resume --noudevsync rs_lin || fail "resume failed"
		cycles=$((cycles + 1))
		sleep 0.2
	done
	wait "$fio_pid" || fail "fio failed: $(tail -n 20 "$SCRATCH/fio.out")"
	grep -E 'WRITE:|READ:|err=' "$SCRATCH/fio.out" | sed 's/^ *//'
	grep -q 'err= 0' "$SCRATCH/fio.out" || fail "fio reports errors"
	[ "$cycles" -ge 3 ] || fail "only $cycles suspend/resume cycles while fio ran"
	echo "$cycles suspend/reload/resume cycles under 4 fio jobs"
	[ "$(dmsetup table rs_lin)" = "0 65536 $T $(lsblk -dno MAJ:MIN /dev/mapper/rs_delay | tr -d ' ') 8192" ] ||
		fail "table after the reloads: $(dmsetup table rs_lin)"
	: "$majmin"
}

# fio_has_io <dev>: some I/O reached the device below (fio is running).
fio_has_io() {
	[ "$(stat_field "$1" 5)" -gt 0 ]
}

# remove --deferred while 4 fio jobs run: the device stays while they have it open, they finish
# with every byte verified, and it disappears when the last one closes it.
test_deferred_remove_under_fio() {
	local loop job fio_pid
	loop=$(make_loop 40)
	dmsetup create rs_delay --table "0 81920 delay $loop 0 5"
	dmsetup create rs_lin --table "0 65536 $T /dev/mapper/rs_delay 0"
	job=$(fscratch fio)
	fio_job "$job" /dev/mapper/rs_lin 4
	fio "$job" --output="$SCRATCH/fio.out" &
	fio_pid=$!
	# fio closes and opens the device again between its write and verify phases: an opener of
	# our own keeps the device from going away in such a gap.
	exec 3</dev/mapper/rs_lin
	wait_until 60 fio_has_io "$loop"
	dmsetup remove --deferred rs_lin || fail "remove --deferred failed"
	kill -0 "$fio_pid" 2>/dev/null || fail "fio ended before the removal was asked for"
	dmsetup info rs_lin | grep -qi deferred || fail "no deferred removal scheduled: $(dmsetup info rs_lin)"
	wait "$fio_pid" || fail "fio failed: $(grep -iE 'error|fail|bad' "$SCRATCH/fio.out" | head -n 5)"
	grep -q 'err= 0' "$SCRATCH/fio.out" || fail "fio reports errors"
	dmsetup info rs_lin >/dev/null 2>&1 || fail "the device went away while still open"
	exec 3<&-
	wait_until 30 dm_absent rs_lin
	echo "deferred removal done after fio closed the device"
}

MARK=$(fmark)
load_module
fault_modules
echo "# target under test: $T"
ktap_plan 7
run_test flush_reaches_device test_flush_reaches_device
run_test all_io_fails test_all_io_fails
run_test one_block_fails test_one_block_fails
run_test intermittent_errors test_intermittent_errors
run_test suspend_reload_resume_under_fio test_suspend_reload_resume_under_fio
run_test deferred_remove_under_fio test_deferred_remove_under_fio
run_test kernel_log_clean kernel_log_clean_since "$MARK"
ktap_finish
