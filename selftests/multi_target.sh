#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Tables of several targets, as people build them: two and three linear-rs segments (also mixed
# with the kernel's linear and error targets) under a real filesystem, flushes and FUA reaching
# every device of the table, I/O and discards across segment boundaries, suspend under a mounted
# filesystem, the kernel's own linear reading what ours wrote, verity over a segmented data
# device, and a verity table refusing a second target.
cd "$(dirname "$0")" && . ./lib.sh

majmin() { lsblk -dno MAJ:MIN "$1" | tr -d ' '; }
blkname() { basename "$(readlink -f "$1")"; }
# Flush requests a block device completed (/sys/block/<dev>/stat, field 16).
flushes() { awk '{print $16}' "/sys/block/$(blkname "$1")/stat"; }

# mkfs, mount, copy a tree of files, fsync, umount, fsck, mount again and compare: on <device>.
fs_round_trip() {
	local dev=$1 mnt src
	mnt=$(mktemp -d "$SCRATCH/mnt.XXXXXX")
	src=$(mktemp -d "$SCRATCH/tree.XXXXXX")
	for i in $(seq 24); do head -c $((i * 37 * 1024)) /dev/urandom >"$src/f$i"; done
	cp -a /usr/lib/modules/"$(uname -r)"/kernel/drivers/md "$src/md"
	mkfs.ext4 -q -F -b 4096 "$dev"
	mount "$dev" "$mnt"
	cp -a "$src/." "$mnt/"
	# fsync every file, then the filesystem.
	find "$mnt" -type f -exec sh -c 'for f; do dd if="$f" of="$f" bs=1M count=0 conv=notrunc,fsync status=none; done' sh {} +
	sync -f "$mnt"
	umount "$mnt"
	fsck.ext4 -fn "$dev" >"$SCRATCH/fsck.out" 2>&1 || { cat "$SCRATCH/fsck.out"; fail "fsck found errors on $dev"; }
	mount -o ro "$dev" "$mnt"
	diff -r -x lost+found "$src" "$mnt" >"$SCRATCH/diff.out" 2>&1 ||
		{ umount "$mnt"; head -n 5 "$SCRATCH/diff.out"; fail "files differ after remount of $dev"; }
	umount "$mnt"
	rmdir "$mnt"
	rm -rf "$src"
}

# The table of the crash this script was written for: the second linear-rs segment starts at
# sector 8192 of the mapped device; device-mapper sends it empty flushes with sector 0.
test_two_segments_filesystem() {
	local loop
	loop=$(make_loop 64)
	dmsetup create rs_multi --table "0 65536 linear-rs $loop 0
65536 65536 linear-rs $loop 65536"
	dd if=/dev/zero of=/dev/mapper/rs_multi bs=4096 count=1 oflag=direct conv=fsync status=none
	fs_round_trip /dev/mapper/rs_multi
}

# Three segments on two devices, mixing linear-rs with the kernel's linear, out of order.
test_three_segments_mixed_filesystem() {
	local a b
	a=$(make_loop 48)
	b=$(make_loop 48)
	dmsetup create rs_multi --table "0 40000 linear-rs $b 1000
40000 30000 linear $a 50000
70000 50000 linear-rs $a 100"
	fs_round_trip /dev/mapper/rs_multi
	# The kernel's linear alone reads the same filesystem (same mapping, C targets only).
	dmsetup remove rs_multi
	dmsetup create rs_ref --table "0 40000 linear $b 1000
40000 30000 linear $a 50000
70000 50000 linear $a 100"
	fsck.ext4 -fn /dev/mapper/rs_ref >/dev/null 2>&1 || fail "the kernel's linear finds a broken filesystem"
}

# One write straddling the boundary between two segments on two devices: each part lands where
# its segment maps it; the read back through the table is whole.
test_io_across_boundary() {
	local a b data
	a=$(make_loop 8)
	b=$(make_loop 8)
	dmsetup create rs_multi --table "0 4096 linear-rs $a 100
4096 4096 linear-rs $b 300"
	data=$(random_file 1048576)
	# 512 KiB before the boundary (sector 4096), 512 KiB after it.
	dd if="$data" of=/dev/mapper/rs_multi bs=1M seek=$(((4096 - 1024) * 512)) oflag=direct,seek_bytes status=none
	read_at /dev/mapper/rs_multi $(((4096 - 1024) * 512)) 1048576 | cmp -s - "$data" ||
		fail "read across the boundary differs"
	read_at "$a" $(((100 + 4096 - 1024) * 512)) 524288 | cmp -s - <(head -c 524288 "$data") ||
		fail "first half not at the end of segment 1 on $a"
	read_at "$b" $((300 * 512)) 524288 | cmp -s - <(tail -c 524288 "$data") ||
		fail "second half not at the start of segment 2 on $b"
}

# A discard across the boundary reaches both devices (loop punches holes: they read as zeroes),
# and nothing outside the range.
test_discard_across_boundary() {
	local a b data
	a=$(make_loop 8)
	b=$(make_loop 8)
	dmsetup create rs_multi --table "0 4096 linear-rs $a 0
4096 4096 linear-rs $b 0"
	data=$(random_file $((8192 * 512)))
	write_at /dev/mapper/rs_multi 0 "$data"
	blkdiscard -o $(((4096 - 256) * 512)) -l $((512 * 512)) /dev/mapper/rs_multi
	read_at "$a" $(((4096 - 256) * 512)) $((256 * 512)) | cmp -s - <(head -c $((256 * 512)) /dev/zero) ||
		fail "discarded end of segment 1 still holds data"
	read_at "$b" 0 $((256 * 512)) | cmp -s - <(head -c $((256 * 512)) /dev/zero) ||
		fail "discarded start of segment 2 still holds data"
	read_at "$b" $((256 * 512)) 4096 | cmp -s - <(tail -c +$(((4096 + 256) * 512 + 1)) "$data" | head -c 4096) ||
		fail "data after the discarded range was lost"
}

# An fsync on the mapped device reaches every device of the table as a flush, whichever segment
# was written; a FUA write to the second segment reaches its device as a flush or FUA (loop
# devices have no FUA: the block layer turns it into a flush there).
test_flush_and_fua_reach_every_device() {
	local a b fa fb
	a=$(make_loop 8)
	b=$(make_loop 8)
	dmsetup create rs_multi --table "0 4096 linear-rs $a 0
4096 4096 linear-rs $b 0"
	grep -q 'write back' "/sys/block/$(blkname /dev/mapper/rs_multi)/queue/write_cache" ||
		fail "mapped device has no volatile write cache: $(cat "/sys/block/$(blkname /dev/mapper/rs_multi)/queue/write_cache")"
	fa=$(flushes "$a") fb=$(flushes "$b")
	dd if=/dev/urandom of=/dev/mapper/rs_multi bs=4096 count=1 seek=600 oflag=direct conv=fsync status=none
	[ "$(flushes "$a")" -gt "$fa" ] || fail "no flush reached $a (segment 1)"
	[ "$(flushes "$b")" -gt "$fb" ] || fail "no flush reached $b (segment 2, not written)"
	fb=$(flushes "$b")
	python3 - /dev/mapper/rs_multi <<'PY' || fail "O_DSYNC direct write failed"
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
buf = mmap.mmap(-1, 4096)
buf.write(os.urandom(4096))
os.pwrite(fd, buf, 6000 * 512)
os.close(fd)
PY
	[ "$(flushes "$b")" -gt "$fb" ] || fail "a FUA write to segment 2 did not reach $b as flush or FUA"
}

# A mounted filesystem on a two-segment table keeps working across suspends (which freeze it)
# and a reload that swaps the backing devices' roles for nothing but the same mapping.
test_suspend_resume_under_filesystem() {
	local loop mnt writer i
	loop=$(make_loop 64)
	local table="0 65536 linear-rs $loop 0
65536 65536 linear-rs $loop 65536"
	dmsetup create rs_multi --table "$table"
	mkfs.ext4 -q -F -b 4096 /dev/mapper/rs_multi
	mnt=$(mktemp -d "$SCRATCH/mnt.XXXXXX")
	mount /dev/mapper/rs_multi "$mnt"
	head -c $((20 * 1048576)) /dev/urandom >"$SCRATCH/big"
	(cp "$SCRATCH/big" "$mnt/big" && sync -f "$mnt") &
	writer=$!
	for i in 1 2 3; do
		dmsetup suspend rs_multi
		dmsetup reload rs_multi --table "$table"
		dmsetup resume rs_multi
	done
	wait "$writer" || { umount "$mnt"; fail "copy failed across suspends"; }
	cmp -s "$SCRATCH/big" "$mnt/big" || { umount "$mnt"; fail "file differs after suspends"; }
	umount "$mnt"
	rmdir "$mnt"
	rm -f "$SCRATCH/big"
	fsck.ext4 -fn /dev/mapper/rs_multi >/dev/null 2>&1 || fail "fsck after suspends"
}

# A segment mapped to the kernel's error target fails I/O there and only there. The error target
# does not let flushes bypass map, so here device-mapper sends them through linear-rs's map (with
# sector 0, before the third segment): an fsync must still reach the loop device as a flush.
test_error_segment() {
	local loop f0 f1
	loop=$(make_loop 8)
	dmsetup create rs_multi --table "0 4096 linear-rs $loop 0
4096 2048 error
6144 2048 linear-rs $loop 6144"
	dd if=/dev/urandom of=/dev/mapper/rs_multi bs=4096 count=1 oflag=direct status=none ||
		fail "write to segment 1 failed"
	dd if=/dev/urandom of=/dev/mapper/rs_multi bs=4096 count=1 seek=800 oflag=direct status=none ||
		fail "write to segment 3 failed"
	if dd if=/dev/mapper/rs_multi of=/dev/null bs=4096 count=1 skip=600 iflag=direct status=none 2>/dev/null; then
		fail "read from the error segment succeeded"
	fi
	# An fsync still works: the flush reaches the loop device and the error target accepts it.
	f0=$(flushes "$loop")
	dd if=/dev/zero of=/dev/mapper/rs_multi bs=4096 count=1 oflag=direct conv=fsync status=none ||
		fail "fsync with an error segment in the table failed"
	f1=$(flushes "$loop")
	[ "$f1" -gt "$f0" ] || fail "the fsync sent no flush to $loop (flush counter $f0 -> $f1)"
	echo "flushes completed by $loop across the fsync: $f0 -> $f1"
}

# verity over a data device that is itself a two-segment linear-rs table, and a verity table
# refusing any second target (it must be alone: the LSMs rely on it).
test_verity_over_segments_and_alone() {
	local a b hashl data root salt blocks out
	a=$(make_loop 8)
	b=$(make_loop 8)
	hashl=$(make_loop 2)
	dmsetup create rs_data --table "0 8192 linear-rs $a 0
8192 8192 linear-rs $b 0"
	head -c $((16384 * 512)) /dev/urandom | dd of=/dev/mapper/rs_data bs=1M oflag=direct status=none
	out=$(veritysetup format /dev/mapper/rs_data "$hashl")
	root=$(awk '/^Root hash:/ {print $3}' <<<"$out")
	salt=$(awk '/^Salt:/ {print $2}' <<<"$out")
	blocks=$((16384 / 8))
	dmsetup create rs_v --readonly --table "0 16384 verity-rs 1 $(majmin /dev/mapper/rs_data) $(majmin "$hashl") 4096 4096 $blocks 1 sha256 $root $salt"
	cmp -s /dev/mapper/rs_v /dev/mapper/rs_data || fail "verity over segments reads other data"
	dmsetup remove rs_v
	expect_ro_refused_table "must appear alone" "0 16384 verity-rs 1 $(majmin /dev/mapper/rs_data) $(majmin "$hashl") 4096 4096 $blocks 1 sha256 $root $salt
16384 8 linear-rs $a 0"
	expect_ro_refused_table "must appear alone" "0 8 linear-rs $a 0
8 16384 verity-rs 1 $(majmin /dev/mapper/rs_data) $(majmin "$hashl") 4096 4096 $blocks 1 sha256 $root $salt"
}

# dmsetup create --readonly must fail with <message> in the kernel log.
expect_ro_refused_table() {
	local mark
	mark="dm-rust selftest: multi $RANDOM"
	echo "$mark" >/dev/kmsg
	if dmsetup create rs_bad --readonly --table "$2" 2>/dev/null; then
		fail "table accepted: $2"
	fi
	dmsetup info rs_bad >/dev/null 2>&1 && fail "rs_bad exists after a refused table"
	dmesg | sed -n "/$mark/,\$p" | grep -q -- "$1" ||
		fail "no '$1' in the kernel log: $(dmesg | sed -n "/$mark/,\$p" | tail -n 3)"
}

load_module
ktap_plan 8
run_test two_segments_filesystem test_two_segments_filesystem
run_test three_segments_mixed_filesystem test_three_segments_mixed_filesystem
run_test io_across_boundary test_io_across_boundary
run_test discard_across_boundary test_discard_across_boundary
run_test flush_and_fua_reach_every_device test_flush_and_fua_reach_every_device
run_test suspend_resume_under_filesystem test_suspend_resume_under_filesystem
run_test error_segment test_error_segment
run_test verity_over_segments_and_alone test_verity_over_segments_and_alone
ktap_finish
