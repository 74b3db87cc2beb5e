#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# linear-rs: data lands where the table says, stacking, table and status lines, discards, flushes
# and FUA reaching the device below, suspend/reload/resume under I/O, deferred remove, and bad tables
# refused. With DM_RUST_IMPL=kernel, the same tests run on the kernel's linear ($LINEAR).
cd "$(dirname "$0")" && . ./lib.sh

# Writes through the mapping at several offsets and finds the data on the backing device.
test_round_trip_at_offsets() {
	local loop data off start=2048
	loop=$(make_loop 32)
	dmsetup create rs_lin --table "0 32768 $LINEAR $loop $start"
	data=$(random_file 65536)
	for off in 0 4096 1048576 $((32768 * 512 - 65536)); do
		write_at /dev/mapper/rs_lin "$off" "$data"
		read_at /dev/mapper/rs_lin "$off" 65536 | cmp -s - "$data" ||
			fail "read back through rs_lin differs at $off"
		read_at "$loop" $((start * 512 + off)) 65536 | cmp -s - "$data" ||
			fail "data written at $off is not at sector $start + $off/512 of $loop"
	done
	# Nothing landed before the mapped area.
	read_at "$loop" 0 $((start * 512)) | cmp -s - <(head -c $((start * 512)) /dev/zero) ||
		fail "data written below the target's start"
}

test_table_and_status() {
	local loop majmin
	loop=$(make_loop 8)
	majmin=$(lsblk -dno MAJ:MIN "$loop" | tr -d ' ')
	dmsetup create rs_lin --table "0 4096 $LINEAR $loop 100"
	dmsetup table rs_lin
	[ "$(dmsetup table rs_lin)" = "0 4096 $LINEAR $majmin 100" ] || fail "table line differs"
	[ "$(dmsetup status rs_lin)" = "0 4096 $LINEAR " ] || fail "status line: '$(dmsetup status rs_lin)'"
	[ "$(blockdev --getsz /dev/mapper/rs_lin)" = 4096 ] || fail "device size"
}

test_stacked() {
	local loop data
	loop=$(make_loop 16)
	dmsetup create rs_lower --table "0 30000 $LINEAR $loop 100"
	dmsetup create rs_upper --table "0 20000 $LINEAR /dev/mapper/rs_lower 50"
	data=$(random_file 131072)
	write_at /dev/mapper/rs_upper 8192 "$data"
	read_at "$loop" $(((100 + 50) * 512 + 8192)) 131072 | cmp -s - "$data" ||
		fail "stacked write not at sector 150 + 16 of the loop device"
	read_at /dev/mapper/rs_lower $((50 * 512 + 8192)) 131072 | cmp -s - "$data" ||
		fail "stacked write not visible through the lower device"
}

test_discard_passes_down() {
	local loop data
	loop=$(make_loop 16)
	dmsetup create rs_lin --table "0 16384 $LINEAR $loop 2048"
	[ "$(cat /sys/block/$(basename "$(readlink -f /dev/mapper/rs_lin)")/queue/discard_max_bytes)" -gt 0 ] ||
		fail "mapped device does not advertise discards"
	data=$(random_file 1048576)
	write_at /dev/mapper/rs_lin 0 "$data"
	blkdiscard -o 0 -l 1048576 /dev/mapper/rs_lin
	read_at "$loop" $((2048 * 512)) 1048576 | cmp -s - <(head -c 1048576 /dev/zero) ||
		fail "discarded range on the loop device still holds data"
}

test_flush_and_fua_pass() {
	local loop dm data f0 f1 i n=8
	loop=$(make_loop 8)
	dmsetup create rs_lin --table "0 8192 $LINEAR $loop 0"
	dm=$(readlink -f /dev/mapper/rs_lin)
	# The loop device has a volatile write cache (a flush is an fsync of its file) and no FUA:
	# the block layer turns a FUA write into the write and a flush.
	[ "$(cat "/sys/class/block/${loop#/dev/}/queue/write_cache")" = "write back" ] ||
		fail "$loop has no write cache: no flush would reach it"
	[ "$(cat "/sys/class/block/${dm#/dev/}/queue/write_cache")" = "write back" ] ||
		fail "rs_lin does not pass on the write cache of $loop: flushes stop at it"
	# Field 16 of the stat of the loop device counts the flush requests it completed: nothing
	# but a flush moves it. An fsync of rs_lin is one flush of rs_lin.
	f0=$(disk_stat "$loop" 16)
	for i in $(seq $n); do
		sync /dev/mapper/rs_lin
	done
	f1=$(disk_stat "$loop" 16)
	echo "$n fsyncs of rs_lin: $((f1 - f0)) flushes completed by $loop"
	[ $((f1 - f0)) -ge $n ] || fail "$n flushes sent to rs_lin, $((f1 - f0)) reached $loop"
	# O_DSYNC direct writes: each is a FUA write (a write and a flush below), then an fsync (a
	# flush): two flushes below for each write, one if FUA were dropped on the way.
	data=$(random_file $((n * 4096)))
	f0=$(disk_stat "$loop" 16)
	dd if="$data" of=/dev/mapper/rs_lin bs=4096 oflag=direct,dsync status=none
	f1=$(disk_stat "$loop" 16)
	echo "$n O_DSYNC writes to rs_lin: $((f1 - f0)) flushes completed by $loop"
	[ $((f1 - f0)) -ge $((2 * n)) ] ||
		fail "$n FUA writes and $n flushes sent to rs_lin, $((f1 - f0)) flushes reached $loop (FUA dropped?)"
	read_at "$loop" 0 $((n * 4096)) | cmp -s - "$data" || fail "synchronous writes not on the backing device"
}

# wrote_more_or_ended <sectors written by rs_lin before> <writer pid>
wrote_more_or_ended() {
	[ "$(disk_stat /dev/mapper/rs_lin 7)" -gt "$1" ] || ! kill -0 "$2" 2>/dev/null
}

# A writer runs while the table is suspended, reloaded and resumed several times; afterwards every
# byte it wrote must be there.
test_suspend_reload_resume_under_io() {
	local loop data writer i majmin w
	loop=$(make_loop 64)
	majmin=$(lsblk -dno MAJ:MIN "$loop" | tr -d ' ')
	dmsetup create rs_lin --table "0 65536 $LINEAR $loop 0"
	# 8 MiB: under emulation the writer still spans the five cycles (wrote_more_or_ended copes
	# with an earlier end); the fio version of this test is in faults_linear.sh.
	data=$(random_file $((8 * 1048576)))
	dd if="$data" of=/dev/mapper/rs_lin bs=65536 oflag=direct status=none &
	writer=$!
	for i in 1 2 3 4 5; do
		dmsetup suspend rs_lin
		dmsetup reload rs_lin --table "0 65536 $LINEAR $majmin 0"
		dmsetup resume rs_lin
		# Let the writer go on before the next cycle (or finish).
		w=$(disk_stat /dev/mapper/rs_lin 7)
		wait_for 60 wrote_more_or_ended "$w" "$writer" || fail "the writer made no progress after resume $i"
	done
	wait "$writer" || fail "writer failed"
	read_at /dev/mapper/rs_lin 0 $((8 * 1048576)) | cmp - "$data" || fail "data lost across suspend/reload/resume"
	[ "$(dmsetup table rs_lin)" = "0 65536 $LINEAR $majmin 0" ] || fail "table after reloads"
}

test_reload_moves_mapping() {
	local loop data
	loop=$(make_loop 16)
	data=$(random_file 65536)
	write_at "$loop" $((4096 * 512)) "$data"
	dmsetup create rs_lin --table "0 8192 $LINEAR $loop 0"
	dmsetup reload rs_lin --table "0 8192 $LINEAR $loop 4096"
	read_at /dev/mapper/rs_lin 0 65536 | cmp -s - "$data" && fail "inactive table already live"
	dmsetup resume rs_lin
	read_at /dev/mapper/rs_lin 0 65536 | cmp -s - "$data" || fail "new table not live after resume"
}

test_deferred_remove() {
	local loop
	loop=$(make_loop 8)
	dmsetup create rs_lin --table "0 8192 $LINEAR $loop 0"
	exec 3</dev/mapper/rs_lin
	dmsetup remove --deferred rs_lin
	dmsetup info rs_lin >/dev/null 2>&1 || fail "device removed while open"
	dmsetup info rs_lin | grep -qi 'deferred' || fail "no deferred removal scheduled: $(dmsetup info rs_lin)"
	exec 3<&-
	wait_for 10 eval '! dmsetup info rs_lin >/dev/null 2>&1' || fail "device still present 10 s after the last close"
}

test_bad_tables() {
	local loop size
	load_module
	loop=$(make_loop 8)
	size=$(blockdev --getsz "$loop")
	expect_table_refused rs_bad "Invalid argument count" "0 100 $LINEAR $loop"
	expect_table_refused rs_bad "Invalid argument count" "0 100 $LINEAR $loop 0 extra"
	expect_table_refused rs_bad "Invalid device sector" "0 100 $LINEAR $loop abc"
	expect_table_refused rs_bad "Invalid device sector" "0 100 $LINEAR $loop -1"
	expect_table_refused rs_bad "Invalid device sector" "0 100 $LINEAR $loop 12x"
	# A start past the device's end: linear-rs refuses it itself, the kernel's linear leaves it to
	# device-mapper's check of the table's device areas. A start that does not fit in 64 bits:
	# linear-rs refuses the number, the kernel's sscanf wraps it around (to a start past the end).
	# Both are refused either way (Documentation/reference.md).
	local small=$( [ "$DM_RUST_IMPL" = kernel ] && echo "too small for target" || echo "Device too small")
	local overflow=$( [ "$DM_RUST_IMPL" = kernel ] && echo "too small for target" || echo "Invalid device sector")
	expect_table_refused rs_bad "$overflow" "0 100 $LINEAR $loop 99999999999999999999"
	expect_table_refused rs_bad "Device lookup failed" "0 100 $LINEAR /dev/does-not-exist 0"
	expect_table_refused rs_bad "$small" "0 100 $LINEAR $loop $((size - 99))"
	expect_table_refused rs_bad "$small" "0 100 $LINEAR $loop 18446744073709551615"
	# And the target still works afterwards.
	dmsetup create rs_lin --table "0 100 $LINEAR $loop $((size - 100))"
}

load_module
ktap_plan 9
run_test round_trip_at_offsets test_round_trip_at_offsets
run_test table_and_status test_table_and_status
run_test stacked test_stacked
run_test discard_passes_down test_discard_passes_down
run_test flush_and_fua_pass test_flush_and_fua_pass
run_test suspend_reload_resume_under_io test_suspend_reload_resume_under_io
run_test reload_moves_mapping test_reload_moves_mapping
run_test deferred_remove test_deferred_remove
run_test bad_tables test_bad_tables
ktap_finish
