#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# linear-rs at the edges: the first and last block of a device, a target ending exactly at the
# device's end, a table of two segments, 4096-byte logical sectors, sector numbers above 2^32,
# write-zeroes, REQ_NOWAIT and atomic writes.
# FAULT_LINEAR_TARGET=linear runs the same tests against the kernel's linear (a reference run).
cd "$(dirname "$0")" && . ./lib.sh && . ./fault_lib.sh

T=$FAULT_LINEAR_TARGET

# The whole device mapped, ending exactly at its end: the first and last 4 KiB blocks land at the
# first and last 4 KiB of the device, and nothing can be read or written past the end.
test_first_and_last_block() {
	local loop size a b
	loop=$(make_loop 8)
	size=$(sectors "$loop")
	dmsetup create rs_lin --table "0 $size $T $loop 0"
	[ "$(sectors /dev/mapper/rs_lin)" = "$size" ] || fail "size $(sectors /dev/mapper/rs_lin), not $size"
	a=$(random_file 4096)
	b=$(random_file 4096)
	dd_write /dev/mapper/rs_lin 4096 0 "$a"
	dd_write /dev/mapper/rs_lin 4096 $((size / 8 - 1)) "$b"
	read_at "$loop" 0 4096 | cmp -s - "$a" || fail "first block not at the start of $loop"
	read_at "$loop" $((size * 512 - 4096)) 4096 | cmp -s - "$b" || fail "last block not at the end of $loop"
	read_at /dev/mapper/rs_lin $((size * 512 - 512)) 512 | cmp -s - <(tail -c 512 "$b") ||
		fail "the last sector reads back wrong"
	# Past the end: a read returns nothing, a write fails.
	dd if=/dev/mapper/rs_lin bs=4096 skip=$((size / 8)) count=1 iflag=direct of="$SCRATCH/out" status=none
	[ ! -s "$SCRATCH/out" ] || fail "a read past the end returned data"
	if dd if="$a" of=/dev/mapper/rs_lin bs=4096 seek=$((size / 8)) oflag=direct conv=notrunc status=none 2>/dev/null; then
		fail "a write past the end succeeded"
	fi
	# A one-block target at the very end of the device.
	dmsetup create rs_end --table "0 8 $T $loop $((size - 8))"
	read_at /dev/mapper/rs_end 0 4096 | cmp -s - "$b" || fail "a target on the last block reads wrong"
}

# Two segments of our target in one table (two devices): data on both sides of the boundary, and
# an I/O that spans it, land where each segment says. No flush is sent to this table.
test_two_segments() {
	local l1 l2 data
	l1=$(make_loop 4)
	l2=$(make_loop 4)
	dmsetup create rs_two --table "0 4096 $T $l1 2048
4096 4096 $T $l2 1024"
	data=$(random_file 65536)
	# Bytes 4096*512 - 32 KiB .. + 32 KiB: half on each device.
	dd_write /dev/mapper/rs_two 4096 $((4096 * 512 / 4096 - 8)) "$data"
	read_at "$l1" $(((2048 + 4096 - 64) * 512)) 32768 | cmp -s - <(head -c 32768 "$data") ||
		fail "the first half is not at the end of the first segment's range of $l1"
	read_at "$l2" $((1024 * 512)) 32768 | cmp -s - <(tail -c 32768 "$data") ||
		fail "the second half is not at sector 1024 of $l2"
	read_at /dev/mapper/rs_two $((4096 * 512 - 32768)) 65536 | cmp -s - "$data" ||
		fail "the spanning write reads back wrong"
	dd_write /dev/mapper/rs_two 4096 $((8192 / 8 - 1)) <(head -c 4096 "$data") 1
	read_at "$l2" $(((1024 + 4096 - 8) * 512)) 4096 | cmp -s - <(head -c 4096 "$data") ||
		fail "the last block of the second segment is not at sector 5112 of $l2"
}

# A loop device with 4096-byte logical sectors: the mapped device has them too, data lands where
# the table says, and a table that would split a logical sector is refused.
test_sector_size_4096() {
	local f loop data
	modprobe loop 2>/dev/null || true
	f=$(fscratch ss4k)
	truncate -s 16M "$f"
	loop=$(losetup -f --show --sector-size 4096 "$f")
	[ "$(blockdev --getss "$loop")" = 4096 ] || fail "losetup --sector-size 4096 gave $(blockdev --getss "$loop")"
	dmsetup create rs_lin --table "0 16384 $T $loop 8192"
	[ "$(blockdev --getss /dev/mapper/rs_lin)" = 4096 ] ||
		fail "logical sector size of the mapped device: $(blockdev --getss /dev/mapper/rs_lin)"
	data=$(random_file 8192)
	dd_write /dev/mapper/rs_lin 4096 0 "$data"
	dd_write /dev/mapper/rs_lin 4096 2046 "$data"
	read_at "$loop" $((8192 * 512)) 8192 | cmp -s - "$data" || fail "the first blocks are not at sector 8192"
	read_at "$loop" $(((8192 + 16384) * 512 - 8192)) 8192 | cmp -s - "$data" ||
		fail "the last blocks are not at the end of the mapped range"
	if dmsetup create rs_bad --table "0 8192 $T $loop 1" 2>"$SCRATCH/err"; then
		fail "a table starting at sector 1 of a 4096-byte-sector device was accepted"
	fi
	if dmsetup create rs_bad2 --table "0 8193 $T $loop 0" 2>"$SCRATCH/err"; then
		fail "a table of 8193 sectors over a 4096-byte-sector device was accepted"
	fi
}

# Sector numbers above 2^32, in the table and in the I/O: below us 8 TiB of the kernel's zero
# target followed by a real loop device; our target starts at sector 3 * 2^31 of that and is
# written at its own sector 5 * 2^31, which must land at sector 0 of the loop device.
test_sectors_above_2_32() {
	local loop big=$((1 << 34)) start=$((3 << 31)) data
	fault_modules
	loop=$(make_loop 8)
	dmsetup create rs_big --table "0 $big zero
$big 16384 linear $loop 0"
	dmsetup create rs_lin --table "0 $((big + 16384 - start)) $T /dev/mapper/rs_big $start"
	[ "$(sectors /dev/mapper/rs_lin)" = $((big + 16384 - start)) ] || fail "size of the mapped device"
	data=$(random_file 65536)
	write_at /dev/mapper/rs_lin $(((big - start) * 512)) "$data"
	read_at "$loop" 0 65536 | cmp -s - "$data" || fail "data written at sector $((big - start)) is not at sector 0 of $loop"
	read_at /dev/mapper/rs_lin $(((big - start) * 512)) 65536 | cmp -s - "$data" || fail "read back differs"
	# The last block of the 8 TiB + 8 MiB device.
	write_at /dev/mapper/rs_lin $(((big + 16384 - start) * 512 - 4096)) <(head -c 4096 "$data")
	read_at "$loop" $((8 * 1048576 - 4096)) 4096 | cmp -s - <(head -c 4096 "$data") ||
		fail "the last block is not at the end of $loop"
	# Below sector 2^32 of our target it is all zero target: zeros come back.
	read_at /dev/mapper/rs_lin $(((1 << 32) * 512 - 4096)) 4096 | cmp -s - <(head -c 4096 /dev/zero) ||
		fail "sector 2^32 - 8 does not read as zeros"
	[ "$(dmsetup table rs_lin)" = "0 $((big + 16384 - start)) $T $(lsblk -dno MAJ:MIN /dev/mapper/rs_big | tr -d ' ') $start" ] ||
		fail "table line: $(dmsetup table rs_lin)"
}

# Write-zeroes: the mapped device offers it as the device below does, and blkdiscard -z zeroes
# exactly the range asked for.
test_write_zeroes() {
	local loop ref wz
	loop=$(make_loop 16)
	wz=$(queue_attr "$loop" write_zeroes_max_bytes)
	[ "$wz" -gt 0 ] || fail "the loop device offers no write-zeroes"
	dmsetup create rs_lin --table "0 16384 $T $loop 8192"
	[ "$(queue_attr /dev/mapper/rs_lin write_zeroes_max_bytes)" -gt 0 ] ||
		fail "the mapped device offers no write-zeroes (the loop device: $wz bytes)"
	ref=$(fill_random /dev/mapper/rs_lin 1048576)
	blkdiscard -z -o 65536 -l 131072 /dev/mapper/rs_lin || fail "blkdiscard -z failed"
	read_at "$loop" $((8192 * 512 + 65536)) 131072 | cmp -s - <(head -c 131072 /dev/zero) ||
		fail "the zeroed range on $loop is not zero"
	read_at "$loop" $((8192 * 512)) 65536 | cmp -s - <(head -c 65536 "$ref") || fail "data before the range changed"
	read_at "$loop" $((8192 * 512 + 196608)) 65536 | cmp -s - <(tail -c +196609 "$ref" | head -c 65536) ||
		fail "data after the range changed"
	fallocate -z -o 262144 -l 4096 /dev/mapper/rs_lin || fail "fallocate --zero-range failed"
	read_at "$loop" $((8192 * 512 + 262144)) 4096 | cmp -s - <(head -c 4096 /dev/zero) || fail "fallocate -z did not zero"
}

# REQ_NOWAIT: direct reads and writes with RWF_NOWAIT through the target either complete with the
# right data or say EAGAIN, never "not supported" (as on the device below).
nowait_io() {
	python3 - "$1" "$2" <<'EOF'
import errno, mmap, os, sys
dev, ref = sys.argv[1], sys.argv[2]
fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
want = open(ref, "rb").read()
wbuf = mmap.mmap(-1, 4096)
wbuf[:] = want[:4096]
done = again = 0
for i in range(64):
    try:
        n = os.pwritev(fd, [wbuf], 4096 * i, os.RWF_NOWAIT)
        assert n == 4096, f"short NOWAIT write: {n}"
        done += 1
    except OSError as e:
        if e.errno != errno.EAGAIN:
            sys.exit(f"RWF_NOWAIT write: {e}")
        again += 1
        os.pwritev(fd, [wbuf], 4096 * i)
    rbuf = mmap.mmap(-1, 4096)
    try:
        n = os.preadv(fd, [rbuf], 4096 * i, os.RWF_NOWAIT)
        assert n == 4096, f"short NOWAIT read: {n}"
        if rbuf[:] != want[:4096]:
            sys.exit(f"block {i} read with RWF_NOWAIT differs")
        done += 1
    except OSError as e:
        if e.errno != errno.EAGAIN:
            sys.exit(f"RWF_NOWAIT read: {e}")
        again += 1
print(f"RWF_NOWAIT: {done} completed, {again} EAGAIN")
if done == 0:
    sys.exit("no RWF_NOWAIT I/O completed")
EOF
}

test_nowait() {
	local loop ref
	loop=$(make_loop 8)
	ref=$(random_file 4096)
	nowait_io "$loop" "$ref" >/dev/null || fail "RWF_NOWAIT does not work on the loop device itself"
	dmsetup create rs_lin --table "0 8192 $T $loop 4096"
	nowait_io /dev/mapper/rs_lin "$ref" || fail "RWF_NOWAIT I/O through the target failed"
	read_at "$loop" $((4096 * 512 + 63 * 4096)) 4096 | cmp -s - "$ref" || fail "the NOWAIT writes are not on $loop"
}

# Atomic writes: over a device that has them (scsi_debug atomic_wr=1), the mapped device offers
# the same atomic write unit, and an RWF_ATOMIC write of that size lands; one larger is refused.
atomic_write() {
	python3 - "$@" <<'EOF'
import os, sys, mmap
dev, off, size, src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
RWF_ATOMIC = 0x40
fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, size)
buf[:] = open(src, "rb").read(size)
try:
    n = os.pwritev(fd, [buf], off, RWF_ATOMIC)
except OSError as e:
    sys.exit(f"RWF_ATOMIC write of {size} bytes at {off}: {e.strerror} ({e.errno})")
print(f"RWF_ATOMIC write of {size} bytes at {off}: {n}")
EOF
}

test_atomic_writes() {
	local sd umax umin data
	# The disk driver first: left to udev (the scsi device's uevent), it came more than 30 s
	# late on the debug kernel.
	modprobe sd_mod
	modprobe scsi_debug atomic_wr=1 dev_size_mb=16 2>"$SCRATCH/err" ||
		fail "modprobe scsi_debug atomic_wr=1 failed: $(cat "$SCRATCH/err")"
	wait_until 30 scsi_debug_disk >/dev/null
	sd=$(scsi_debug_disk)
	umax=$(queue_attr "$sd" atomic_write_unit_max_bytes)
	umin=$(queue_attr "$sd" atomic_write_unit_min_bytes)
	echo "$sd: atomic write unit $umin..$umax bytes"
	[ "$umax" -gt 0 ] || fail "scsi_debug atomic_wr=1 gave no atomic write unit"
	dmsetup create rs_lin --table "0 16384 $T $sd 8192"
	[ "$(queue_attr /dev/mapper/rs_lin atomic_write_unit_max_bytes)" = "$umax" ] ||
		fail "the mapped device's atomic write unit is $(queue_attr /dev/mapper/rs_lin atomic_write_unit_max_bytes), not $umax"
	data=$(random_file $((umax * 2)))
	atomic_write /dev/mapper/rs_lin "$umax" "$umax" "$data" || fail "an atomic write through the target failed"
	read_at "$sd" $((8192 * 512 + umax)) "$umax" | cmp -s - <(head -c "$umax" "$data") ||
		fail "the atomic write is not at sector 8192 + $((umax / 512)) of $sd"
	if atomic_write /dev/mapper/rs_lin 0 $((umax * 2)) "$data" 2>/dev/null; then
		fail "an atomic write of twice the unit was accepted"
	fi
}

scsi_debug_disk() {
	local d
	for d in /sys/bus/pseudo/drivers/scsi_debug/adapter*/host*/target*/*/block/*; do
		[ -e "$d" ] && { echo "/dev/$(basename "$d")"; return 0; }
	done
	return 1
}

MARK=$(fmark)
load_module
fault_modules
echo "# target under test: $T"
ktap_plan 9
run_test first_and_last_block test_first_and_last_block
run_test two_segments test_two_segments
run_test sector_size_4096 test_sector_size_4096
run_test sectors_above_2_32 test_sectors_above_2_32
run_test write_zeroes test_write_zeroes
run_test nowait test_nowait
run_test atomic_writes test_atomic_writes
cleanup_devices
modprobe -r scsi_debug 2>/dev/null || true
run_test scsi_debug_removed sh -c '! grep -q "^scsi_debug " /proc/modules'
run_test kernel_log_clean kernel_log_clean_since "$MARK"
ktap_finish
