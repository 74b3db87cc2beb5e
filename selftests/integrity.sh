#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# integrity-rs (mode D, internal hash): devices formatted by integritysetup open in ours; data
# written through ours reads back through the kernel's dm-integrity with no integrity error and
# the other way round (crc32c, integritysetup's default; sha256 tags that ours wrote are checked
# by the kernel's in the recalculation and bitmap tests); a corrupted data sector fails exactly
# its block and is
# counted in the status line; damaged superblocks are refused and nothing is written; writes and
# reads racing on the same blocks never fail; recalculate from a --no-wipe format runs to the end
# and leaves every tag valid (checked by the kernel's target too); suspend stops the worker with
# its position kept, resume finishes it. Mode B (bitmap): ext4 on it survives fsck; the bitmap
# bit of a write is on disk before the write and cleared after bitmap_flush_interval; ours and the
# kernel's read each other's data, and a clean close leaves the same superblock and journal area
# as the kernel's; after a crash (the device below swapped for the error target) reopening
# recalculates the dirty regions only; reloads (ours, the kernel's, ours again on one device)
# take over a live bitmap without recalculating; integritysetup --integrity-bitmap-mode drives
# ours. The journal: a crash of the kernel's mode J (committed entries, blocks wiped in place) is
# replayed by ours in modes D, B and J, leaving the device byte for byte as the kernel's own replay
# does; an entry whose data does not match its tag fails the device. Mode J: integritysetup's
# default mode drives ours, ext4 on it survives fsck, a clean close leaves the journal whole and
# empty, the kernel's target reads what ours wrote and the other way round, and the kernel
# replays the journal of a crash of ours. Tags for the layer above (no internal_hash): the
# kernel's dm-crypt in an authenticated mode stores its tags in ours, and the kernel's
# dm-integrity reads them, and the other way round.
#
# Formatting: a blank device formatted by ours is byte for byte what the kernel's format
# leaves (modes D, J and B), each target opens what the other formatted, and plain
# integritysetup format works with ours registered as "integrity".
#
# The other tests format with integritysetup and the kernel's dm-integrity, which also gives the
# table line; the device is then created with that table for $INTEG: ours (integrity-rs,
# dm_rust loaded without upstream names) or, with DM_RUST_IMPL=kernel, the kernel's own
# "integrity" (the reference run).
cd "$(dirname "$0")" && . ./lib.sh

case $DM_RUST_IMPL in
rust) INTEG=integrity-rs ;;
kernel) INTEG=integrity ;;
esac
MB=16

# The kernel's dm-integrity must own the name "integrity" (integritysetup formats with it):
# dm_rust loaded with upstream names (by an earlier script) is reloaded without.
integrity_setup() {
	modprobe -a dm-mod dm-bufio loop
	if grep -q '^dm_rust ' /proc/modules && ! dmsetup targets | grep -q '^integrity-rs '; then
		rmmod dm_rust || return 1
	fi
	modprobe dm-integrity || return 1
	load_module
}

# fmt <dev> <hash> [format options...]: integritysetup format in mode D.
fmt() {
	local dev=$1 hash=$2
	shift 2
	integritysetup format --batch-mode -I "$hash" "$@" "$dev" >/dev/null
}

# kernel_table <dev> <hash> [open options...]: the table line integritysetup makes (the
# kernel's), with the target name replaced by $INTEG.
kernel_table() {
	local dev=$1 hash=$2 t
	shift 2
	integritysetup open -I "$hash" --integrity-no-journal "$@" "$dev" rs_k >/dev/null
	t=$(dmsetup table --showkeys rs_k)
	integritysetup close rs_k
	echo "$t" | awk -v n="$INTEG" '{ $3 = n; print }'
}

# kernel_table_j <dev> <hash> [open options...]: the same for mode J (integritysetup's default).
kernel_table_j() {
	local dev=$1 hash=$2 t
	shift 2
	integritysetup open -I "$hash" "$@" "$dev" rs_k >/dev/null
	t=$(dmsetup table --showkeys rs_k)
	integritysetup close rs_k
	echo "$t" | awk -v n="$INTEG" '{ $3 = n; print }'
}

# kernel_table_b <dev> <hash> [open options...]: the same for mode B (the kernel's target puts
# the bitmap in force when opened and writes an empty journal over it when closed).
kernel_table_b() {
	local dev=$1 hash=$2 t
	shift 2
	integritysetup open -I "$hash" --integrity-bitmap-mode "$@" "$dev" rs_k >/dev/null
	t=$(dmsetup table --showkeys rs_k)
	integritysetup close rs_k
	echo "$t" | awk -v n="$INTEG" '{ $3 = n; print }'
}

# sb_field <dev> <offset> <od type>: a superblock field (24 u4: flags, 8 u1: version,
# 29 u1: log2 of blocks per bitmap bit, 32 u8: recalc_sector).
sb_field() { dd if="$1" bs=512 count=1 iflag=direct status=none | od -An -t"$3" -j"$2" -N"${3#u}" | tr -d ' '; }
# sb_dirty <dev>: the superblock has the dirty-bitmap flag (0x4).
sb_dirty() { [ $(($(sb_field "$1" 24 u4) & 4)) != 0 ]; }

# bitmap_byte <dev> <n>: byte <n> of the bitmap (at the start of the journal, sector 8).
bitmap_byte() { dd if="$1" bs=512 skip=8 count=8 iflag=direct status=none | od -An -tu1 -j"$2" -N1 | tr -d ' '; }
# bitmap_bit <dev> <bit>: that bit of the on-disk bitmap is set.
bitmap_bit() { [ $(($(bitmap_byte "$1" $(($2 / 8))) >> ($2 % 8) & 1)) = 1 ]; }
# bitmap_clear <dev> <bits>: the first <bits> bits (those in use) of the on-disk bitmap are
# clear; the rest of its 4 KiB block is whatever the journal area held (dm-integrity leaves it).
bitmap_clear() {
	dd if="$1" bs=512 skip=8 count=8 iflag=direct status=none | python3 -c '
import sys
n = int(sys.argv[1])
b = sys.stdin.buffer.read()
sys.exit(0 if all(b[i // 8] >> (i % 8) & 1 == 0 for i in range(n)) else 1)
' "$2"
}
# bitmap_bits <name>: the bits of the bitmap in use on device <name> (its provided sectors over
# its sectors_per_bit).
bitmap_bits() {
	local spb provided
	spb=$(dmsetup table "$1" | grep -o 'sectors_per_bit:[0-9]*' | cut -d: -f2)
	provided=$(status_field "$1" 2)
	echo $(((provided + spb - 1) / spb))
}

# journal_sectors <dev>: the size of the journal area from the superblock (dm-integrity's
# calculate_journal_section_size).
journal_sectors() {
	python3 -c '
import struct, sys
sb = open(sys.argv[1], "rb").read(64)
tag, sections = struct.unpack_from("<HI", sb, 10)
flags = struct.unpack_from("<I", sb, 24)[0]
l2 = sb[28]
entry = (8 + 8 * (1 << l2) + tag + 7) // 8 * 8
per_sector = (504 - (8 if flags & 1 else 0)) // entry
print(sections * ((per_sector * 8 << l2) + 8))
' "$1"
}

# journal_state <dev>: "clean" if every section of the journal carries one commit sequence and
# no entry is in use (what a clean close leaves), else "committed" if entries are in use, else
# "torn"; "garbage" if a commit id is none of the four.
journal_state() {
	python3 -c '
import struct, sys
f = open(sys.argv[1], "rb")
sb = f.read(64)
tag, sections = struct.unpack_from("<HI", sb, 10)
l2 = sb[28]
entry = (8 + 8 * (1 << l2) + tag + 7) // 8 * 8
per_sector = 504 // entry
ss = (per_sector * 8 << l2) + 8
f.seek(8 * 512)
ids = [0x1111111111111111 * k for k in (1, 2, 3, 4)]
used = uniform = 0
for i in range(sections):
    sec = f.read(ss * 512)
    seqs = set()
    for j in range(ss):
        cid = struct.unpack_from("<Q", sec, j * 512 + 504)[0] ^ ((i << 32) ^ j)
        if cid not in ids:
            print("garbage"); sys.exit()
        seqs.add(cid)
        if j < 8:
            for k in range(per_sector):
                if sec[j * 512 + k * entry + 4:j * 512 + k * entry + 8] != b"\xff" * 4:
                    used += 1
    uniform += len(seqs) == 1
print("committed" if used else "clean" if uniform == sections else "torn")
' "$1"
}

# data_offset <dev> <logical byte>: the byte on the device where that logical byte of the
# first interleave area is stored (crc32c tags: 256 sectors of tags before the area's data).
data_offset() { echo $(((8 + $(journal_sectors "$1") + 256) * 512 + $2)); }

# open_ours <name> <table>
open_ours() { dmsetup create "$1" --table "$2"; }

# status_field <name> <n>: the n-th word of the target's status (1: mismatches, 2: provided
# sectors, 3: recalculation position or -).
status_field() { word $((3 + $2)) "$(dmsetup status "$1")"; }

# position_is <name> <sector>, position_is_not <name> <sector>: the recalculation position.
position_is() { [ "$(status_field "$1" 3)" = "$2" ]; }
position_is_not() { [ "$(status_field "$1" 3)" != "$2" ]; }

# corrupt_on_dev <file> <skip> <dev>: finds the 512 bytes at byte <skip> of <file> on <dev>
# and inverts one byte of them there; prints the byte offset of that sector.
corrupt_on_dev() {
	python3 -c '
import os, sys
needle = open(sys.argv[1], "rb").read()[int(sys.argv[2]):][:512]
fd = os.open(sys.argv[3], os.O_RDWR)
data = os.pread(fd, os.lseek(fd, 0, os.SEEK_END), 0)
i = data.find(needle)
if i < 0:
    sys.exit(1)
os.pwrite(fd, bytes([data[i + 100] ^ 0xff]), i + 100)
os.fsync(fd)
os.close(fd)
print(i)
' "$1" "$2" "$3"
}

round_trip() {
	local hash=$1 loop table a b
	loop=$(make_loop $MB)
	fmt "$loop" "$hash"
	table=$(kernel_table "$loop" "$hash")
	echo "# table: $table"
	open_ours rs_int "$table"
	a=$(random_file 1048576)
	write_at /dev/mapper/rs_int 65536 "$a"
	read_at /dev/mapper/rs_int 65536 1048576 | cmp -s - "$a" || fail "read back through $INTEG differs"
	# The whole device reads with no integrity error.
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "reading all of $INTEG failed"
	dmsetup remove --retry rs_int
	# Ours -> the kernel's.
	integritysetup open -I "$hash" --integrity-no-journal "$loop" rs_k
	read_at /dev/mapper/rs_k 65536 1048576 | cmp -s - "$a" || fail "the kernel's dm-integrity reads other data"
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	[ "$(dmsetup status rs_k | awk '{ print $4 }')" = 0 ] || fail "the kernel's dm-integrity counts mismatches"
	# The kernel's -> ours.
	b=$(random_file 1048576)
	write_at /dev/mapper/rs_k 2097152 "$b"
	integritysetup close rs_k
	open_ours rs_int "$table"
	read_at /dev/mapper/rs_int 2097152 1048576 | cmp -s - "$b" || fail "$INTEG reads other data than the kernel's wrote"
	read_at /dev/mapper/rs_int 65536 1048576 | cmp -s - "$a" || fail "$INTEG lost its own data"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "$INTEG finds integrity errors"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches counted: $(dmsetup status rs_int)"
	# The status line: no mismatch, the provided sectors, no recalculation.
	dmsetup status rs_int
	[ "$(status_field rs_int 3)" = - ] || fail "status line: $(dmsetup status rs_int)"
}

test_round_trip_crc32c() { round_trip crc32c; }

# hmac_round_trip [--integrity-legacy-hmac]: a volume formatted with a keyed hmac(sha256) (by
# default with fix_hmac: a salt in the superblock mixed into every tag) and written by the
# kernel's dm-integrity reads back through $INTEG, which shows the table line the kernel shows;
# what $INTEG writes reads back through the kernel's. With fix_hmac (the default) also: every
# block of the device reads through both; with another key every read fails with EILSEQ and is
# counted; a keyed hash without its key, or a key by keyring reference (which dm-integrity 1.15
# does not take), and a recalculation the kernel refuses for keys are refused with the kernel's
# messages. The legacy format runs only the round trip (the rest does not depend on it).
hmac_round_trip() {
	local loop key other kopts table hex wrong a b before err full=1
	[ "${1:-}" != --integrity-legacy-hmac ] || full=
	loop=$(make_loop 8)
	key=$(random_file 32)
	other=$(random_file 32)
	kopts=(--integrity-key-file "$key" --integrity-key-size 32)
	fmt "$loop" hmac-sha256 "${kopts[@]}" "$@"
	# The kernel's target writes first.
	a=$(random_file 1048576)
	integritysetup open -I hmac-sha256 --integrity-no-journal "${kopts[@]}" "$loop" rs_k
	write_at /dev/mapper/rs_k 65536 "$a"
	table=$(dmsetup table --showkeys rs_k | awk -v n="$INTEG" '{ $3 = n; print }')
	integritysetup close rs_k
	echo "# table: $table"
	hex=$(od -An -tx1 -v "$key" | tr -d ' \n')
	[[ $table == *" internal_hash:hmac(sha256):$hex"* ]] || fail "no key in the table line"
	if [ "${1:-}" = --integrity-legacy-hmac ]; then
		[[ $table != *" fix_hmac"* ]] || fail "fix_hmac with --integrity-legacy-hmac"
	else
		[[ $table == *" fix_hmac"* ]] || fail "no fix_hmac in the table line"
	fi
	open_ours rs_int "$table"
	# The table line as the kernel's target shows it, key included.
	[ "$(dmsetup table --showkeys rs_int)" = "$table" ] || fail "table line: $(dmsetup table --showkeys rs_int)"
	read_at /dev/mapper/rs_int 65536 1048576 | cmp -s - "$a" || fail "$INTEG reads other data than the kernel's wrote"
	b=$(random_file 1048576)
	write_at /dev/mapper/rs_int 2097152 "$b"
	[ -z "$full" ] || dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "$INTEG finds integrity errors"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches counted: $(dmsetup status rs_int)"
	dmsetup remove --retry rs_int
	integritysetup open -I hmac-sha256 --integrity-no-journal "${kopts[@]}" "$loop" rs_k
	read_at /dev/mapper/rs_k 2097152 1048576 | cmp -s - "$b" || fail "the kernel's dm-integrity reads other data than $INTEG wrote"
	[ -z "$full" ] || dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	integritysetup close rs_k
	[ -n "$full" ] || return 0
	# Another key: every block fails, with EILSEQ.
	wrong=${table/":$hex"/":$(od -An -tx1 -v "$other" | tr -d ' \n')"}
	open_ours rs_int "$wrong"
	udevadm settle 2>/dev/null || true
	before=$(status_field rs_int 1)
	err=$(dd if=/dev/mapper/rs_int of=/dev/null bs=4096 skip=16 count=1 iflag=direct 2>&1) &&
		fail "a read with the wrong key succeeded"
	echo "# wrong key: $err"
	[[ $err == *"Invalid or incomplete multibyte or wide character"* ]] || fail "not EILSEQ: $err"
	[ "$(status_field rs_int 1)" -gt "$before" ] || fail "no mismatch counted: $(dmsetup status rs_int)"
	dmsetup remove --retry rs_int
	expect_table_refused rs_int "Error setting internal hash key" "${table/":$hex"/}"
	expect_table_refused rs_int "Invalid internal_hash argument" "${table/":$hex"/":32:logon:rs_key"}"
	# fix_hmac without a keyed journal MAC: recalculating is refused (errno EOPNOTSUPP).
	expect_table_refused rs_int "Recalculating with HMAC is disabled for security reasons" \
		"$(echo "$table" | awk '{ $8 = $8 + 1; $0 = $0 " recalculate"; print }')"
	grep -q "Operation not supported" "$SCRATCH/err" || fail "not EOPNOTSUPP: $(cat "$SCRATCH/err")"
}

test_hmac_fix_hmac() { hmac_round_trip; }
test_hmac_legacy() { hmac_round_trip --integrity-legacy-hmac; }

test_corrupted_sector() {
	local loop table d off i before bad=5
	loop=$(make_loop $MB)
	fmt "$loop" sha256
	table=$(kernel_table "$loop" sha256)
	open_ours rs_int "$table"
	d=$(random_file 8192)
	write_at /dev/mapper/rs_int 1048576 "$d"
	dmsetup remove --retry rs_int
	# Where logical sector 2048 + $bad is on the loop device: invert a byte of it there.
	off=$(corrupt_on_dev "$d" $((bad * 512)) "$loop") || fail "data not found on $loop"
	echo "# logical sector $((2048 + bad)) is at byte $off of $loop"
	blockdev --flushbufs "$loop"
	open_ours rs_int "$table"
	# Whatever udev's probe of the new device read is counted before ours.
	udevadm settle 2>/dev/null || true
	before=$(status_field rs_int 1)
	for i in $(seq 0 15); do
		if read_at /dev/mapper/rs_int $((1048576 + i * 512)) 512 >/dev/null 2>&1; then
			[ "$i" != "$bad" ] || fail "the corrupted sector $i read without error"
		else
			[ "$i" = "$bad" ] || fail "sector $i failed, only $bad is corrupted"
		fi
	done
	# One failed read, one mismatch.
	[ "$(status_field rs_int 1)" = $((before + 1)) ] || fail "mismatch count $before before the reads: $(dmsetup status rs_int)"
	dmesg | tail -n 20 | grep -q "Checksum failed at sector 0x$(printf %x $((2048 + bad)))" ||
		fail "no log line for sector $((2048 + bad))"
	dmsetup status rs_int
	dmsetup remove --retry rs_int
	# Mode R (recovery): the corrupted block reads, unchecked; writes fail; nothing is written.
	blockdev --flushbufs "$loop"
	before=$(md5sum <"$loop")
	open_ours rs_int "$(echo "$table" | awk '{ $7 = "R"; print }')"
	[ "$(dmsetup table rs_int | awk '{ print $7 }')" = R ] || fail "table line: $(dmsetup table rs_int)"
	read_at /dev/mapper/rs_int 1048576 8192 >"$SCRATCH/r" || fail "a read in mode R failed"
	[ "$(cmp -l "$SCRATCH/r" "$d" | wc -l)" = 1 ] || fail "mode R read other data than the corrupted block's"
	write_at /dev/mapper/rs_int 1048576 "$d" 2>/dev/null && fail "a write in mode R succeeded"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches counted in mode R: $(dmsetup status rs_int)"
	dmsetup remove --retry rs_int
	blockdev --flushbufs "$loop"
	[ "$(md5sum <"$loop")" = "$before" ] || fail "the device changed in mode R"
}

# allow_discards: a discard across the boundary of two interleave areas (of 4 MiB here) reaches
# the device below, the discarded blocks read back without an integrity error (unchecked: their
# tags are the filler), the blocks around them keep their data, and the kernel's target reads the
# discarded blocks only with allow_discards (the tags are dm-integrity's filler, not tags of the
# data).
test_discards() {
	local loop table d e before k=1048576 z
	loop=$(make_loop 8)
	fmt "$loop" crc32c --interleave-sectors 8192
	table=$(kernel_table "$loop" crc32c --allow-discards)
	[[ $table == *" allow_discards"* ]] || fail "no allow_discards in the table: $table"
	open_ours rs_int "$table"
	[ "$(dmsetup table rs_int)" = "$table" ] || fail "table line: $(dmsetup table rs_int)"
	d=$(random_file $((4 * k)))
	write_at /dev/mapper/rs_int $((2 * k)) "$d"
	before=$(disk_stat "$loop" 12)
	# Logical sector 8192 (4 MiB) starts the second area.
	blkdiscard -o $((3 * k)) -l $((2 * k)) /dev/mapper/rs_int || fail "blkdiscard failed"
	[ "$(disk_stat "$loop" 12)" -ge $((before + 2)) ] || fail "the discard did not reach $loop in two parts"
	read_at /dev/mapper/rs_int $((3 * k)) $((2 * k)) >"$SCRATCH/discarded" || fail "reading discarded blocks failed"
	z=$(head -c $((2 * k)) /dev/zero | cmp -s - "$SCRATCH/discarded" && echo zeroes || echo data)
	echo "# discarded blocks read back as $z"
	read_at /dev/mapper/rs_int $((2 * k)) $k | cmp -s - <(head -c $k "$d") || fail "data before the discard changed"
	read_at /dev/mapper/rs_int $((5 * k)) $k | cmp -s - <(tail -c $k "$d") || fail "data after the discard changed"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches: $(dmsetup status rs_int)"
	# Written again, a discarded block is checked again.
	e=$(random_file $k)
	write_at /dev/mapper/rs_int $((4 * k)) "$e"
	dmsetup remove --retry rs_int
	# Without allow_discards the filler is no tag of the data (the kernel's target, and ours).
	integritysetup open -I crc32c --integrity-no-journal "$loop" rs_k
	read_at /dev/mapper/rs_k $((3 * k)) 4096 >/dev/null 2>&1 && fail "the kernel's target without allow_discards read a discarded block"
	read_at /dev/mapper/rs_k $((4 * k)) $k | cmp -s - "$e" || fail "the kernel's target reads other data"
	integritysetup close rs_k
	open_ours rs_int "$(echo "$table" | awk '{ $8 = $8 - 1; sub(/ allow_discards/, ""); print }')"
	read_at /dev/mapper/rs_int $((3 * k)) 4096 >/dev/null 2>&1 && fail "$INTEG without allow_discards read a discarded block"
	dmsetup remove --retry rs_int
	integritysetup open -I crc32c --integrity-no-journal --allow-discards "$loop" rs_k
	read_at /dev/mapper/rs_k $((3 * k)) $k | cmp -s - <(head -c $k "$SCRATCH/discarded") ||
		fail "the kernel's target with allow_discards reads the discarded blocks otherwise"
	integritysetup close rs_k
}

# A superblock damaged in <offset> (byte, value) is refused with <message>, and nothing is
# written to the device; the superblock is restored afterwards.
bad_superblock() {
	local loop=$1 table=$2 off=$3 val=$4 msg=$5 before
	dd if="$loop" of="$SCRATCH/sb" bs=4096 count=1 iflag=direct status=none
	printf "\\x$val" | dd of="$loop" bs=1 seek="$off" conv=notrunc status=none
	blockdev --flushbufs "$loop"
	before=$(md5sum <"$loop")
	expect_table_refused rs_int "$msg" "$table"
	blockdev --flushbufs "$loop"
	[ "$(md5sum <"$loop")" = "$before" ] || fail "the device changed while refusing '$msg'"
	dd if="$SCRATCH/sb" of="$loop" bs=4096 count=1 oflag=direct conv=notrunc status=none
}

test_bad_superblock() {
	local loop table t2
	loop=$(make_loop $MB)
	fmt "$loop" crc32c
	table=$(kernel_table "$loop" crc32c)
	# The tag size of the table differs from the superblock's.
	t2=$(echo "$table" | awk '{ $6 = 8; print }')
	expect_table_refused rs_int "Tag size doesn't match the information in superblock" "$t2"
	bad_superblock "$loop" "$table" 8 09 "Unknown version"
	bad_superblock "$loop" "$table" 9 02 "Invalid interleave_sectors in the superblock"
	bad_superblock "$loop" "$table" 0 58 "The device is not initialized"
	# The restored superblock opens.
	open_ours rs_int "$table"
	dmsetup remove --retry rs_int
	if [ "$DM_RUST_IMPL" = rust ]; then
		# What is not implemented is refused by name (mode J is implemented, its journal MAC
		# is not).
		t2=$(echo "$table" | awk '{ $7 = "J"; $8 += 1; print $0 " journal_mac:hmac(sha256):00112233445566778899aabbccddeeff" }')
		expect_table_refused rs_int "journal_mac is not implemented" "$t2"
	fi
}

# Writers and direct readers of the same blocks: no read may fail (a read seeing the data of
# one write with the tag of another would).
test_racing_reads_and_writes() {
	local loop table pids=() i rc=0 end
	loop=$(make_loop $MB)
	fmt "$loop" crc32c
	table=$(kernel_table "$loop" crc32c)
	open_ours rs_int "$table"
	head -c 65536 /dev/urandom >"$SCRATCH/w0"
	head -c 65536 /dev/urandom >"$SCRATCH/w1"
	end=$((SECONDS + 8))
	for i in 0 1; do
		(while [ $SECONDS -lt $end ]; do
			dd if="$SCRATCH/w$i" of=/dev/mapper/rs_int bs=4096 seek=16 oflag=direct conv=notrunc status=none || exit 1
		done) &
		pids+=($!)
	done
	for i in 0 1; do
		(while [ $SECONDS -lt $end ]; do
			dd if=/dev/mapper/rs_int of=/dev/null bs=512 skip=128 count=128 iflag=direct status=none || exit 1
		done) &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || rc=1; done
	[ $rc = 0 ] || fail "a read or write failed: $(dmsetup status rs_int)"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches: $(dmsetup status rs_int)"
}

test_recalculate() {
	local loop table provided pos
	loop=$(make_loop 32)
	# Random data everywhere, then a format that leaves it (and the tags) as they are.
	dd if=/dev/urandom of="$loop" bs=1M oflag=direct status=none || true
	fmt "$loop" crc32c --no-wipe
	table=$(kernel_table "$loop" crc32c)
	# The same table with "recalculate".
	table=$(echo "$table" | awk '{ $8 = $8 + 1; $0 = $0 " recalculate"; print }')
	echo "# table: $table"
	open_ours rs_int "$table"
	provided=$(status_field rs_int 2)
	wait_for 120 position_is rs_int "$provided" ||
		fail "recalculation stopped at $(status_field rs_int 3) of $provided"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "reading after recalculation failed"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches: $(dmsetup status rs_int)"
	dmsetup status rs_int
	dmsetup remove --retry rs_int
	# The position is in the superblock: recalc_sector (offset 32) is the end.
	pos=$(dd if="$loop" bs=512 count=1 iflag=direct status=none | od -An -tu8 -j32 -N8 | tr -d ' ')
	[ "$pos" = "$provided" ] || fail "superblock recalc_sector $pos, not $provided"
	# The kernel's dm-integrity checks every tag.
	integritysetup open -I crc32c --integrity-no-journal "$loop" rs_k
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	integritysetup close rs_k
}

# reset_recalculate (integritysetup --integrity-recalculate-reset) recalculates from sector 0 even
# after a finished recalculation: a data sector changed behind the target's back fails its read
# under "recalculate" (the position in the superblock is at the end: nothing to redo) and reads,
# with its new content, once the reset's recalculation has reached the end.
test_recalculate_reset() {
	local loop table provided off byte
	loop=$(make_loop 16)
	dd if=/dev/urandom of="$loop" bs=1M oflag=direct status=none || true
	fmt "$loop" crc32c --no-wipe
	table=$(kernel_table "$loop" crc32c)
	with() { echo "$table" | awk -v o="$1" '{ $8 = $8 + 1; $0 = $0 " " o; print }'; }
	open_ours rs_int "$(with recalculate)"
	provided=$(status_field rs_int 2)
	wait_for 120 position_is rs_int "$provided" ||
		fail "recalculation stopped at $(status_field rs_int 3) of $provided"
	dmsetup remove --retry rs_int
	# One byte of logical sector 2048 inverted on the device, its tag not changed.
	off=$(data_offset "$loop" 1048576)
	byte=$(dd if="$loop" bs=1 skip=$((off + 100)) count=1 iflag=skip_bytes status=none | od -An -tu1 | tr -d ' ')
	printf "\\x$(printf %02x $((byte ^ 255)))" | dd of="$loop" bs=1 seek=$((off + 100)) conv=notrunc oflag=sync status=none
	open_ours rs_int "$(with recalculate)"
	position_is rs_int "$provided" || fail "position $(status_field rs_int 3) after reopening, not $provided"
	if read_at /dev/mapper/rs_int 1048576 512 >/dev/null 2>&1; then
		fail "the changed sector read with no error under recalculate"
	fi
	dmsetup remove --retry rs_int
	open_ours rs_int "$(with reset_recalculate)"
	wait_for 120 position_is rs_int "$provided" ||
		fail "recalculation after the reset stopped at $(status_field rs_int 3) of $provided"
	read_at /dev/mapper/rs_int 1048576 512 | cmp -s - <(read_at "$loop" "$off" 512) ||
		fail "the changed sector does not read (or reads other data) after reset_recalculate"
	# As dm-integrity: every resume of the table recalculates from 0 again, not only the first.
	byte=$(dd if="$loop" bs=1 skip=$((off + 200)) count=1 iflag=skip_bytes status=none | od -An -tu1 | tr -d ' ')
	printf "\x$(printf %02x $((byte ^ 255)))" | dd of="$loop" bs=1 seek=$((off + 200)) conv=notrunc oflag=sync status=none
	dmsetup suspend rs_int
	dmsetup resume rs_int
	wait_for 120 position_is rs_int "$provided" ||
		fail "recalculation after suspend and resume stopped at $(status_field rs_int 3) of $provided"
	read_at /dev/mapper/rs_int 1048576 512 | cmp -s - <(read_at "$loop" "$off" 512) ||
		fail "sector changed again: does not read (or reads other data) after a resume with reset_recalculate"
	dmsetup remove --retry rs_int
}

# Suspend stops the worker: the position stays, nothing is written to the device; resume finishes.
test_recalculate_suspend() {
	local loop table provided p1 p2 w1 w2
	loop=$(make_loop 64)
	dd if=/dev/urandom of="$loop" bs=1M oflag=direct status=none || true
	fmt "$loop" sha256 --no-wipe
	table=$(kernel_table "$loop" sha256)
	table=$(echo "$table" | awk '{ $8 = $8 + 1; $0 = $0 " recalculate"; print }')
	open_ours rs_int "$table"
	provided=$(status_field rs_int 2)
	wait_for 60 position_is_not rs_int 0 || fail "recalculation does not start"
	dmsetup suspend rs_int
	p1=$(status_field rs_int 3)
	w1=$(disk_stat "$loop" 5)
	sleep 2
	p2=$(status_field rs_int 3)
	w2=$(disk_stat "$loop" 5)
	echo "# suspended at $p1 of $provided"
	[ "$p1" = "$p2" ] || fail "position moved while suspended: $p1 -> $p2"
	[ "$w1" = "$w2" ] || fail "writes to the device while suspended: $w1 -> $w2"
	[ "$p1" != "$provided" ] || echo "# (the worker had finished before the suspend)"
	dmsetup resume rs_int
	wait_for 150 position_is rs_int "$provided" ||
		fail "recalculation stopped at $(status_field rs_int 3) of $provided after resume"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "reading after recalculation failed"
}

# Beyond dm-integrity (which has no messages): recalculate_rate limits the worker, recalculate_pause
# stops it with nothing written, recalculate_resume continues to the end.
test_recalculate_messages() {
	local loop table provided a b w1 w2 d1 d2 wpos
	loop=$(make_loop 32)
	dd if=/dev/urandom of="$loop" bs=1M oflag=direct status=none || true
	fmt "$loop" sha256 --no-wipe
	table=$(kernel_table "$loop" sha256)
	table=$(echo "$table" | awk '{ $8 = $8 + 1; $0 = $0 " recalculate"; print }')
	# The rate limit follows the resume at once: dmsetup create without waiting for udev (on the
	# debug kernel that wait alone was long enough for the worker to finish).
	dmsetup create rs_int --noudevsync --table "$table"
	[ "$DM_RUST_IMPL" = kernel ] || dmsetup message rs_int 0 recalculate_rate 1
	udevadm settle 2>/dev/null || true
	if [ "$DM_RUST_IMPL" = kernel ]; then
		dmsetup message rs_int 0 recalculate_pause 2>/dev/null && fail "the kernel's target took a message"
		echo "# the kernel's dm-integrity has no messages (refused, as expected)"
		return 0
	fi
	provided=$(status_field rs_int 2)
	a=$(status_field rs_int 3)
	sleep 3
	b=$(status_field rs_int 3)
	echo "# at 1 MB/s: $a -> $b of $provided in 3 s"
	[ "$b" -gt "$a" ] || fail "no progress at 1 MB/s"
	# 3 s at 1 MB/s, a second's burst, and one range of 128 KiB.
	[ $(((b - a) * 512)) -le $((4000000 + 131072)) ] || fail "more than 1 MB/s: $(((b - a) * 512)) bytes in 3 s"
	# Writes racing the worker: around its position, and above it.
	d1=$(random_file 1048576)
	d2=$(random_file 1048576)
	wpos=$b
	write_at /dev/mapper/rs_int $((wpos * 512)) "$d1"
	write_at /dev/mapper/rs_int $((24 * 1048576)) "$d2"
	dmsetup message rs_int 0 recalculate_pause
	sleep 1
	a=$(status_field rs_int 3)
	w1=$(disk_stat "$loop" 5)
	sleep 2
	b=$(status_field rs_int 3)
	w2=$(disk_stat "$loop" 5)
	[ "$a" = "$b" ] || fail "position moved while paused: $a -> $b"
	[ "$w1" = "$w2" ] || fail "writes to the device while paused: $w1 -> $w2"
	# The paused position is in the superblock.
	b=$(dd if="$loop" bs=512 count=1 iflag=direct status=none | od -An -tu8 -j32 -N8 | tr -d ' ')
	[ "$a" = "$b" ] || fail "superblock has $b, the paused position is $a"
	dmsetup message rs_int 0 recalculate_rate 0
	dmsetup message rs_int 0 recalculate_resume
	wait_for 150 position_is rs_int "$provided" ||
		fail "recalculation stopped at $(status_field rs_int 3) of $provided after recalculate_resume"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "reading after recalculation failed"
	read_at /dev/mapper/rs_int $((wpos * 512)) 1048576 | cmp -s - "$d1" || fail "data written at the worker's position differs"
	read_at /dev/mapper/rs_int $((24 * 1048576)) 1048576 | cmp -s - "$d2" || fail "data written above the worker's position differs"
	dmsetup message rs_int 0 recalculate_rate x 2>/dev/null && fail "recalculate_rate x accepted"
	dmsetup message rs_int 0 frobnicate 2>/dev/null && fail "an unknown message was accepted"
	return 0
}

# Mode B with ext4: mkfs, mount, copy, fsync, umount, fsck through $INTEG, with 1 MiB per bit
# and a flush every 500 ms: the bits in use are all clear on disk once the flush has passed
# (bitmap_interop checks that a write's bit is there before); then the kernel's target checks
# every tag and fsck passes through it.
test_bitmap_ext4() {
	local loop table mnt a b nbits
	loop=$(make_loop 48)
	fmt "$loop" sha256 --integrity-bitmap-mode
	table=$(kernel_table_b "$loop" sha256 --bitmap-sectors-per-bit 2048 --bitmap-flush-time 500)
	echo "# table: $table"
	[[ $table == *" B "*" sectors_per_bit:2048 bitmap_flush_interval:500 "* ]] || fail "table line: $table"
	open_ours rs_int "$table"
	[ "$(dmsetup table rs_int)" = "$table" ] || fail "table line: $(dmsetup table rs_int)"
	sb_dirty "$loop" || fail "no dirty-bitmap flag in the superblock while open"
	nbits=$(bitmap_bits rs_int)
	mkfs.ext4 -q /dev/mapper/rs_int
	mnt=$SCRATCH/mnt
	mkdir "$mnt"
	mount /dev/mapper/rs_int "$mnt"
	a=$(random_file 3145728)
	b=$(random_file 1048576)
	cp "$a" "$mnt/a"
	mkdir "$mnt/d"
	cp "$b" "$mnt/d/b"
	sync -f "$mnt/a"
	umount "$mnt"
	wait_for 20 bitmap_clear "$loop" "$nbits" || fail "bitmap bits still set well after bitmap_flush_interval"
	fsck.ext4 -fn /dev/mapper/rs_int || fail "fsck found errors"
	mount /dev/mapper/rs_int "$mnt"
	cmp -s "$mnt/a" "$a" && cmp -s "$mnt/d/b" "$b" || fail "files differ after a remount"
	umount "$mnt"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches: $(dmsetup status rs_int)"
	dmsetup status rs_int
	dmsetup remove --retry rs_int
	sb_dirty "$loop" && fail "dirty-bitmap flag left after a clean close"
	integritysetup open -I sha256 --integrity-bitmap-mode "$loop" rs_k
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	fsck.ext4 -fn /dev/mapper/rs_k || fail "fsck through the kernel's dm-integrity found errors"
	integritysetup close rs_k
}

# Mode B between ours and the kernel's: the write's bit is on disk (flushes every 60 s: not yet
# cleared); data written by either reads back through the other with no integrity error; a
# clean close of ours leaves the superblock and the journal area byte for byte as the kernel's.
test_bitmap_interop() {
	local loop table a b js
	loop=$(make_loop 16)
	fmt "$loop" crc32c --integrity-bitmap-mode
	table=$(kernel_table_b "$loop" crc32c --bitmap-flush-time 60000)
	echo "# table: $table"
	# What the kernel's target left when it was closed.
	js=$(journal_sectors "$loop")
	echo "# journal: $js sectors, superblock version $(sb_field "$loop" 8 u1), log2 blocks per bit $(sb_field "$loop" 29 u1)"
	dd if="$loop" of="$SCRATCH/kernel.head" bs=512 count=$((8 + js)) iflag=direct status=none
	open_ours rs_int "$table"
	[ "$(dmsetup table rs_int)" = "$table" ] || fail "table line: $(dmsetup table rs_int)"
	sb_dirty "$loop" || fail "no dirty-bitmap flag in the superblock while open"
	[ "$(sb_field "$loop" 8 u1)" -ge 3 ] || fail "superblock version $(sb_field "$loop" 8 u1) in mode B"
	bitmap_clear "$loop" "$(bitmap_bits rs_int)" || fail "bitmap bits set before any write"
	a=$(random_file 1048576)
	write_at /dev/mapper/rs_int 65536 "$a"
	# The write starts at sector 128, in bit 0 whatever the granularity.
	bitmap_bit "$loop" 0 || fail "the write's bitmap bit is not on disk"
	read_at /dev/mapper/rs_int 65536 1048576 | cmp -s - "$a" || fail "read back through $INTEG differs"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "reading all of $INTEG failed"
	dmsetup remove --retry rs_int
	sb_dirty "$loop" && fail "dirty-bitmap flag left after a clean close"
	dd if="$loop" of="$SCRATCH/ours.head" bs=512 count=$((8 + js)) iflag=direct status=none
	cmp "$SCRATCH/kernel.head" "$SCRATCH/ours.head" ||
		fail "superblock or journal area after a clean close differs from the kernel's"
	# Ours -> the kernel's.
	integritysetup open -I crc32c --integrity-bitmap-mode "$loop" rs_k
	read_at /dev/mapper/rs_k 65536 1048576 | cmp -s - "$a" || fail "the kernel's dm-integrity reads other data"
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	[ "$(dmsetup status rs_k | awk '{ print $4 }')" = 0 ] || fail "the kernel's dm-integrity counts mismatches"
	# The kernel's -> ours.
	b=$(random_file 1048576)
	write_at /dev/mapper/rs_k 2097152 "$b"
	integritysetup close rs_k
	open_ours rs_int "$table"
	read_at /dev/mapper/rs_int 2097152 1048576 | cmp -s - "$b" || fail "$INTEG reads other data than the kernel's wrote"
	read_at /dev/mapper/rs_int 65536 1048576 | cmp -s - "$a" || fail "$INTEG lost its own data"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "$INTEG finds integrity errors"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches counted: $(dmsetup status rs_int)"
	[ "$(status_field rs_int 3)" = - ] || fail "status line: $(dmsetup status rs_int)"
	dmsetup status rs_int
}

# A crash in mode B: $INTEG over a linear device writes (the bit of its 1 MiB region set on
# disk first), then the device below becomes the error target, so the close writes nothing: the
# superblock keeps the dirty-bitmap flag. The data of that region is then changed on the disk (a
# write whose tags never made it), and so is a block of a region written cleanly before. Opened
# again, $INTEG recalculates the dirty region: it reads with no error (also before the worker
# reaches it) and returns the new data; the clean region still fails its check, in ours and in
# the kernel's.
test_bitmap_crash() {
	local loop table n a b provided
	loop=$(make_loop 16)
	fmt "$loop" crc32c --integrity-bitmap-mode
	b=$(random_file 65536)
	integritysetup open -I crc32c --integrity-bitmap-mode "$loop" rs_k
	write_at /dev/mapper/rs_k $((10 * 1048576)) "$b"
	integritysetup close rs_k
	table=$(kernel_table_b "$loop" crc32c --bitmap-sectors-per-bit 2048 --bitmap-flush-time 600000)
	n=$(blockdev --getsz "$loop")
	dmsetup create rs_lower --table "0 $n linear $loop 0"
	open_ours rs_int "$(echo "$table" | awk '{ $4 = "/dev/mapper/rs_lower"; print }')"
	a=$(random_file 1048576)
	write_at /dev/mapper/rs_int $((4 * 1048576)) "$a"
	blockdev --flushbufs /dev/mapper/rs_int
	bitmap_bit "$loop" 4 || fail "the write's bitmap bit (4) is not on disk"
	bitmap_bit "$loop" 10 && fail "bit 10 set: nothing was written there"
	# The crash: nothing $INTEG writes from now on reaches the disk.
	dmsetup reload rs_lower --table "0 $n error"
	dmsetup resume rs_lower
	dmsetup remove --retry rs_int
	dmsetup remove --retry rs_lower
	blockdev --flushbufs "$loop"
	sb_dirty "$loop" || fail "the crash left no dirty-bitmap flag"
	bitmap_bit "$loop" 4 || fail "the crash left no bit 4"
	# Torn writes: data changed without its tag, in the dirty region and in a clean one.
	corrupt_on_dev "$a" 0 "$loop" >/dev/null || fail "data of the dirty region not found on $loop"
	corrupt_on_dev "$b" 0 "$loop" >/dev/null || fail "data of the clean region not found on $loop"
	blockdev --flushbufs "$loop"
	open_ours rs_int "$table"
	read_at /dev/mapper/rs_int $((4 * 1048576)) 1048576 >"$SCRATCH/r1" || fail "a dirty region failed to read after the crash"
	provided=$(status_field rs_int 2)
	wait_for 120 position_is rs_int "$provided" ||
		fail "recalculation stopped at $(status_field rs_int 3) of $provided"
	read_at /dev/mapper/rs_int $((4 * 1048576)) 1048576 >"$SCRATCH/r2" || fail "the recalculated region failed to read"
	cmp -s "$SCRATCH/r1" "$SCRATCH/r2" || fail "the dirty region reads differently before and after its recalculation"
	[ "$(cmp -l "$SCRATCH/r2" "$a" | wc -l)" = 1 ] || fail "the recalculated region does not read as on the disk"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches in the dirty region: $(dmsetup status rs_int)"
	read_at /dev/mapper/rs_int $((10 * 1048576)) 4096 >/dev/null 2>&1 && fail "a clean region was recalculated"
	dmsetup status rs_int
	dmsetup remove --retry rs_int
	sb_dirty "$loop" && fail "dirty-bitmap flag left after a clean close"
	integritysetup open -I crc32c --integrity-bitmap-mode "$loop" rs_k
	read_at /dev/mapper/rs_k $((4 * 1048576)) 1048576 | cmp -s - "$SCRATCH/r2" ||
		fail "the kernel's dm-integrity reads the recalculated region otherwise"
	read_at /dev/mapper/rs_k $((10 * 1048576)) 4096 >/dev/null 2>&1 && fail "the kernel's target read the corrupted clean region"
	integritysetup close rs_k
}

# A reload swaps tables while the old one is live: the new table's constructor reads the
# superblock the old one has in force (dirty bitmap), and its resume must read again what the old
# one left when it was suspended (a clean superblock, an empty journal): no recalculation, the
# data as written. Ours -> ours, then ours -> the kernel's -> ours on one mapped device (with
# DM_RUST_IMPL=kernel: the kernel's throughout).
test_bitmap_reload() {
	local loop table ktable a b
	loop=$(make_loop 16)
	fmt "$loop" crc32c --integrity-bitmap-mode
	# 256 KiB per bit: the bits in use reach the bytes an empty journal sets (its first entry's
	# "unused" mark), so a table that took the journal for a dirty bitmap would recalculate.
	table=$(kernel_table_b "$loop" crc32c --bitmap-sectors-per-bit 512)
	ktable=$(echo "$table" | awk '{ $3 = "integrity"; print }')
	open_ours rs_int "$table"
	a=$(random_file 1048576)
	write_at /dev/mapper/rs_int 1048576 "$a"
	dmsetup reload rs_int --table "$table"
	dmsetup resume rs_int
	[ "$(status_field rs_int 3)" = - ] || fail "a reload of the same table started a recalculation: $(dmsetup status rs_int)"
	sb_dirty "$loop" || fail "no dirty-bitmap flag after the reload"
	read_at /dev/mapper/rs_int 1048576 1048576 | cmp -s - "$a" || fail "data differs after the reload"
	dmsetup reload rs_int --table "$ktable" || fail "device-mapper refused the kernel's table in place of ours"
	dmsetup resume rs_int
	[ "$(dmsetup table rs_int | awk '{ print $3 }')" = integrity ] || fail "table: $(dmsetup table rs_int)"
	[ "$(status_field rs_int 3)" = - ] || fail "the kernel's table recalculates after ours: $(dmsetup status rs_int)"
	read_at /dev/mapper/rs_int 1048576 1048576 | cmp -s - "$a" || fail "the kernel's table reads other data"
	b=$(random_file 1048576)
	write_at /dev/mapper/rs_int $((4 * 1048576)) "$b"
	dmsetup reload rs_int --table "$table"
	dmsetup resume rs_int
	[ "$(dmsetup table rs_int)" = "$table" ] || fail "table: $(dmsetup table rs_int)"
	[ "$(status_field rs_int 3)" = - ] || fail "ours recalculates after the kernel's table: $(dmsetup status rs_int)"
	read_at /dev/mapper/rs_int 1048576 1048576 | cmp -s - "$a" || fail "$INTEG lost its own data"
	read_at /dev/mapper/rs_int $((4 * 1048576)) 1048576 | cmp -s - "$b" || fail "$INTEG reads other data than the kernel's table wrote"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "$INTEG finds integrity errors"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches: $(dmsetup status rs_int)"
}

# journal_crash <loop> <file>: integritysetup's mode J (the kernel's target, its default) writes
# <file> at 1 MiB of a crc32c device, an fsync commits it to the journal, then the crash: the
# device below turns into the error target before the journal is cleared (the close's clean
# journal does not reach the disk). The kernel may have written the blocks back already (with a
# journal of one section it does so at the commit): they are wiped in place, as if the write-back
# had not reached the disk, so that only a replay of the journal brings them back.
journal_crash() {
	local loop=$1 a=$2 n
	n=$(blockdev --getsz "$loop")
	dmsetup create rs_lower --table "0 $n linear $loop 0"
	integritysetup open -I crc32c /dev/mapper/rs_lower rs_k
	dmsetup table rs_k | grep -q ' J ' || fail "not mode J: $(dmsetup table rs_k)"
	# fsync sends the flush that commits the journal (BLKFLSBUF would not: no flush, and the
	# write would still be only in the target's memory).
	dd if="$a" of=/dev/mapper/rs_k bs=8192 seek=128 oflag=direct conv=notrunc,fsync status=none
	dmsetup reload rs_lower --table "0 $n error"
	dmsetup resume rs_lower
	dmsetup remove --retry rs_k
	dmsetup remove --retry rs_lower
	dd if=/dev/zero of="$loop" bs=512 count=16 seek=$(($(data_offset "$loop" 1048576) / 512)) oflag=direct conv=notrunc status=none
	blockdev --flushbufs "$loop"
}

# journal_entry0_used <dev>: the first entry of the journal (section 0, sector 8 of the device)
# is in use: its sector_hi is not all ones.
journal_entry0_used() {
	[ "$(dd if="$1" bs=512 skip=8 count=1 iflag=direct status=none | od -An -tx4 -j4 -N4 | tr -d ' ')" != ffffffff ]
}

# A journal with committed entries that a crash left (mode J, the kernel's target) is replayed
# when the device is opened in mode D: the write is in place, every block reads without error,
# the journal is erased; the device then reads the same through the kernel's target, and is
# byte for byte what the kernel's own mode D leaves after replaying a copy of the same journal.
# (With DM_RUST_IMPL=kernel, the kernel's target replays both.)
test_journal_replay() {
	local loop copy table a
	loop=$(make_loop 32)
	copy=$(make_loop 32)
	fmt "$loop" crc32c
	table=$(kernel_table "$loop" crc32c)
	a=$(random_file 8192)
	journal_crash "$loop" "$a"
	journal_entry0_used "$loop" || fail "the crash left no committed entry in the journal"
	dd if="$loop" of="$copy" bs=1M iflag=direct oflag=direct status=none
	open_ours rs_int "$table"
	read_at /dev/mapper/rs_int 1048576 8192 | cmp -s - "$a" || fail "the journal's write is not in place"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "$INTEG finds integrity errors"
	dmsetup remove rs_int
	! journal_entry0_used "$loop" || fail "the journal was not erased"
	# The kernel's own replay (mode D) of the copy leaves the same bytes.
	integritysetup open -I crc32c --integrity-no-journal "$copy" rs_k
	integritysetup close rs_k
	blockdev --flushbufs "$loop"
	blockdev --flushbufs "$copy"
	cmp "$loop" "$copy" >&2 || fail "the device differs from the kernel's replay of the same journal"
	integritysetup open -I crc32c --integrity-no-journal "$loop" rs_k
	read_at /dev/mapper/rs_k 1048576 8192 | cmp -s - "$a" || fail "the kernel's target does not read the write"
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's target finds integrity errors"
	integritysetup close rs_k
}

# A replayed entry whose data no longer matches its tag (a byte of the journal's copy flipped)
# fails the device, as dm-integrity: every read fails, the error is named in the kernel log,
# and nothing of the journal is written in place.
test_journal_replay_corrupt() {
	local loop table a mark
	loop=$(make_loop 32)
	fmt "$loop" crc32c
	table=$(kernel_table "$loop" crc32c)
	a=$(random_file 8192)
	journal_crash "$loop" "$a"
	journal_entry0_used "$loop" || fail "the crash left no committed entry in the journal"
	# Entry 0's data: sector 16 (the journal at 8, its first 8 sectors of entries).
	printf '\x5a' | dd of="$loop" bs=1 seek=$((16 * 512)) conv=notrunc status=none
	blockdev --flushbufs "$loop"
	mark="journal_replay_corrupt $RANDOM$RANDOM"
	echo "$mark" >/dev/kmsg
	open_ours rs_int "$table"
	! read_at /dev/mapper/rs_int 0 4096 >/dev/null 2>&1 || fail "a device whose journal does not match its tags reads"
	dmesg | sed -n "/$mark/,\$p" | grep -q "tag mismatch when replaying journal" ||
		fail "no tag mismatch in the kernel log: $(dmesg | tail -n 3)"
	dmsetup remove rs_int
	journal_entry0_used "$loop" || fail "the journal was erased"
}

# A journal a crash left (mode J) is replayed by mode B before its bitmap goes over it (the
# kernel's resume does the same).
test_bitmap_journal_to_replay() {
	local loop table a
	loop=$(make_loop 32)
	fmt "$loop" crc32c
	table=$(kernel_table_b "$loop" crc32c)
	a=$(random_file 8192)
	journal_crash "$loop" "$a"
	journal_entry0_used "$loop" || fail "the crash left no committed entry in the journal"
	open_ours rs_int "$table"
	read_at /dev/mapper/rs_int 1048576 8192 | cmp -s - "$a" || fail "the journal's write is not in place"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "$INTEG finds integrity errors"
}

# Mode J through integritysetup (its default mode), ours registered as "integrity": the table is
# mode J, data written reads back, a clean close leaves the journal whole and empty; the kernel's
# target (mode J) then reads the same data without an error, writes more, and ours reads both.
test_journal_integritysetup() {
	local loop a b
	loop=$(make_loop 16)
	fmt "$loop" crc32c
	if [ "$DM_RUST_IMPL" = rust ]; then
		trap upstream_integrity_off EXIT
		upstream_integrity_on || fail "cannot put dm_rust with upstream names in place of dm-integrity"
	fi
	integritysetup open -I crc32c "$loop" rs_is
	dmsetup table rs_is
	dmsetup table rs_is | grep -q ' integrity .* J ' || fail "not mode J: $(dmsetup table rs_is)"
	integritysetup status rs_is || fail "integritysetup status failed on the device"
	a=$(random_file 2097152)
	write_at /dev/mapper/rs_is 1048576 "$a"
	read_at /dev/mapper/rs_is 1048576 2097152 | cmp -s - "$a" || fail "read back through integritysetup's device differs"
	dd if=/dev/mapper/rs_is of=/dev/null bs=1M iflag=direct status=none || fail "reading the whole device failed"
	integritysetup close rs_is
	[ "$(journal_state "$loop")" = clean ] || fail "journal after a clean close: $(journal_state "$loop")"
	if [ "$DM_RUST_IMPL" = rust ]; then
		trap - EXIT
		upstream_integrity_off
	fi
	integritysetup open -I crc32c "$loop" rs_k
	read_at /dev/mapper/rs_k 1048576 2097152 | cmp -s - "$a" || fail "the kernel's dm-integrity reads other data"
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	b=$(random_file 1048576)
	write_at /dev/mapper/rs_k 4194304 "$b"
	integritysetup close rs_k
	[ "$(journal_state "$loop")" = clean ] || fail "journal after the kernel's clean close: $(journal_state "$loop")"
	open_ours rs_int "$(kernel_table_j "$loop" crc32c)"
	read_at /dev/mapper/rs_int 4194304 1048576 | cmp -s - "$b" || fail "$INTEG reads other data than the kernel's wrote"
	read_at /dev/mapper/rs_int 1048576 2097152 | cmp -s - "$a" || fail "$INTEG lost its own data"
	dd if=/dev/mapper/rs_int of=/dev/null bs=1M iflag=direct status=none || fail "$INTEG finds integrity errors"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches counted: $(dmsetup status rs_int)"
}

# ext4 on ours in mode J: mkfs, mount, copy, fsync, umount, fsck; the kernel's target (mode J)
# then finds no integrity error and fsck passes through it.
test_journal_ext4() {
	local loop table mnt a b
	loop=$(make_loop 32)
	fmt "$loop" crc32c
	table=$(kernel_table_j "$loop" crc32c)
	[[ $table == *" J "* ]] || fail "table line: $table"
	open_ours rs_int "$table"
	[ "$(dmsetup table rs_int)" = "$table" ] || fail "table line: $(dmsetup table rs_int)"
	mkfs.ext4 -q /dev/mapper/rs_int
	mnt=$SCRATCH/mnt
	mkdir "$mnt"
	mount /dev/mapper/rs_int "$mnt"
	a=$(random_file 3145728)
	b=$(random_file 1048576)
	cp "$a" "$mnt/a"
	mkdir "$mnt/d"
	cp "$b" "$mnt/d/b"
	sync -f "$mnt/a"
	umount "$mnt"
	fsck.ext4 -fn /dev/mapper/rs_int || fail "fsck found errors"
	mount /dev/mapper/rs_int "$mnt"
	cmp -s "$mnt/a" "$a" && cmp -s "$mnt/d/b" "$b" || fail "files differ after a remount"
	umount "$mnt"
	[ "$(status_field rs_int 1)" = 0 ] || fail "mismatches: $(dmsetup status rs_int)"
	dmsetup remove --retry rs_int
	[ "$(journal_state "$loop")" = clean ] || fail "journal after a clean close: $(journal_state "$loop")"
	integritysetup open -I crc32c "$loop" rs_k
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	fsck.ext4 -fn /dev/mapper/rs_k || fail "fsck through the kernel's dm-integrity found errors"
	integritysetup close rs_k
}

# Crashes in mode J, both ways. The kernel's (integritysetup open) crashes with a committed write
# (journal_crash): ours in mode J replays it, goes on writing, and closes cleanly; the kernel's
# target reads both writes. Then ours crashes after an fsync'd write, and the block in place is
# wiped (as if its write had not reached the disk): the kernel's target replays our journal and
# reads the write back without an error.
test_journal_crash_interop() {
	local loop table a b c n
	loop=$(make_loop 32)
	fmt "$loop" crc32c
	table=$(kernel_table_j "$loop" crc32c)
	a=$(random_file 8192)
	journal_crash "$loop" "$a"
	[ "$(journal_state "$loop")" = committed ] || fail "the crash left no committed entry: $(journal_state "$loop")"
	open_ours rs_int "$table"
	read_at /dev/mapper/rs_int 1048576 8192 | cmp -s - "$a" || fail "the journal's write is not in place"
	b=$(random_file 1048576)
	write_at /dev/mapper/rs_int 4194304 "$b"
	dmsetup remove --retry rs_int
	[ "$(journal_state "$loop")" = clean ] || fail "journal after a clean close: $(journal_state "$loop")"
	integritysetup open -I crc32c "$loop" rs_k
	read_at /dev/mapper/rs_k 1048576 8192 | cmp -s - "$a" || fail "the kernel's dm-integrity lost the replayed write"
	read_at /dev/mapper/rs_k 4194304 1048576 | cmp -s - "$b" || fail "the kernel's dm-integrity reads other data than ours wrote"
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	integritysetup close rs_k
	# Ours crashes.
	n=$(blockdev --getsz "$loop")
	dmsetup create rs_lower --table "0 $n linear $loop 0"
	open_ours rs_int "$(echo "$table" | awk '{ $4 = "/dev/mapper/rs_lower"; print }')"
	c=$(random_file 8192)
	dd if="$c" of=/dev/mapper/rs_int bs=8192 seek=256 oflag=direct conv=notrunc,fsync status=none
	dmsetup reload rs_lower --table "0 $n error"
	dmsetup resume rs_lower
	dmsetup remove --retry rs_int
	dmsetup remove --retry rs_lower
	blockdev --flushbufs "$loop"
	[ "$(journal_state "$loop")" = committed ] || fail "our crash left no committed entry: $(journal_state "$loop")"
	# The block in place wiped: only the journal has it now.
	dd if=/dev/zero of="$loop" bs=512 count=16 seek=$(($(data_offset "$loop" 2097152) / 512)) oflag=direct conv=notrunc status=none
	integritysetup open -I crc32c --integrity-no-journal "$loop" rs_k
	read_at /dev/mapper/rs_k 2097152 8192 | cmp -s - "$c" || fail "the kernel's replay of our journal lost the write"
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	integritysetup close rs_k
}

# dm_rust with upstream names in place of the kernel's dm-integrity (rust only), for
# integritysetup; undone on the way out, whatever happens.
upstream_integrity_on() {
	rmmod dm_integrity || return 1
	unload_module || return 1
	insmod "$DM_RUST_KO" upstream_names=1 || return 1
	[ ! -e /sys/module/dm_integrity ] && dmsetup targets | grep -q '^integrity '
}
upstream_integrity_off() {
	dmsetup remove --retry rs_is >/dev/null 2>&1 || true
	unload_module
	modprobe dm-integrity
	load_module
}

# Tags for the layer above (no internal_hash), as LUKS2 --integrity uses them: the kernel's
# dm-crypt in an authenticated mode (authenc(hmac(sha256),xts(aes)), 32-byte tags) on $INTEG.
# A blank device formatted by $INTEG's constructor; the mapped device has an integrity profile
# of 32 bytes per 512; data written through dm-crypt on ours (mode J) reads back, the kernel's
# dm-integrity under the same dm-crypt reads it and writes more, ours (mode D) reads that; a
# changed ciphertext sector fails exactly that sector's read in dm-crypt's tag check; ext4 on
# the stack survives fsck. Modes B and allow_discards need an internal hash and are refused, and
# the target must be alone in its table.
test_tags_for_layer_above() {
	local loop provided key ctable a b ct i mnt dm
	modprobe dm-crypt || fail "no dm-crypt"
	loop=$(make_loop $MB)
	dmsetup create rs_i --table "0 1 $INTEG $loop 0 32 J 0"
	provided=$(status_field rs_i 2)
	dmsetup remove --retry rs_i
	[ "$provided" -gt 8192 ] || fail "provided data sectors: $provided"
	if [ "$DM_RUST_IMPL" = rust ]; then
		expect_table_refused rs_i "Bitmap mode can be only used with internal hash" "0 8 $INTEG $loop 0 32 B 0"
		expect_table_refused rs_i "Discard can be only used with internal hash" \
			"0 8 $INTEG $loop 0 32 J 1 allow_discards"
		# Alone in its table, as dm-integrity (DM_TARGET_SINGLETON).
		expect_table_refused rs_i "target type $INTEG must appear alone in table" \
			"$(printf '0 8 %s %s 0 32 J 0\n8 8 linear %s 0' "$INTEG" "$loop" "$loop")"
	fi
	key=$(head -c 96 /dev/urandom | od -An -tx1 | tr -d ' \n')
	ctable="0 $provided crypt capi:authenc(hmac(sha256),xts(aes))-plain64 $key 0 /dev/mapper/rs_i 0 1 integrity:32:aead"
	# stack <integrity target> <mode>: dm-crypt (rs_ic) on it (rs_i).
	stack() {
		dmsetup create rs_i --table "0 $provided $1 $loop 0 32 $2 0" &&
			dmsetup create rs_ic --table "$ctable"
	}
	unstack() { dmsetup remove --retry rs_ic && dmsetup remove --retry rs_i; }

	stack "$INTEG" J || fail "dm-crypt with integrity:32:aead refused $INTEG"
	dm=$(block_name /dev/mapper/rs_i)
	[ "$(cat /sys/block/$dm/integrity/tag_size)" = 32 ] &&
		[ "$(cat /sys/block/$dm/integrity/protection_interval_bytes)" = 512 ] ||
		fail "integrity profile: tag_size $(cat /sys/block/$dm/integrity/tag_size)," \
			"interval $(cat /sys/block/$dm/integrity/protection_interval_bytes)"
	# Every tag written once (what cryptsetup's wipe does): the whole device reads.
	dd if=/dev/zero of=/dev/mapper/rs_ic bs=1M iflag=count_bytes count=$((provided * 512)) oflag=direct status=none
	a=$(random_file 1048576)
	write_at /dev/mapper/rs_ic 1048576 "$a"
	read_at /dev/mapper/rs_ic 1048576 1048576 | cmp -s - "$a" || fail "read back through dm-crypt on ours differs"
	unstack
	stack integrity J
	read_at /dev/mapper/rs_ic 1048576 1048576 | cmp -s - "$a" || fail "the kernel's dm-integrity gives dm-crypt other data"
	b=$(random_file 1048576)
	write_at /dev/mapper/rs_ic 3145728 "$b"
	dd if=/dev/mapper/rs_ic of=/dev/null bs=1M iflag=direct status=none || fail "a read through the kernel's dm-integrity failed"
	unstack
	stack "$INTEG" D
	read_at /dev/mapper/rs_ic 3145728 1048576 | cmp -s - "$b" || fail "ours gives dm-crypt other data than the kernel's wrote"
	dd if=/dev/mapper/rs_ic of=/dev/null bs=1M iflag=direct status=none || fail "a read through ours failed"
	unstack

	# Sector 5 of $a's ciphertext, found on the loop device and changed there.
	dmsetup create rs_i --table "0 $provided $INTEG $loop 0 32 J 0"
	ct=$(mktemp "$SCRATCH/ct.XXXXXX")
	read_at /dev/mapper/rs_i $((1048576 + 5 * 512)) 512 >"$ct"
	dmsetup remove --retry rs_i
	corrupt_on_dev "$ct" 0 "$loop" >/dev/null || fail "ciphertext not found on $loop"
	blockdev --flushbufs "$loop"
	stack "$INTEG" J
	for i in $(seq 0 15); do
		if read_at /dev/mapper/rs_ic $((1048576 + i * 512)) 512 >/dev/null 2>&1; then
			[ "$i" != 5 ] || fail "the changed sector read without error"
		else
			[ "$i" = 5 ] || fail "sector $i failed, only 5 was changed"
		fi
	done
	dmesg | tail -n 20 | grep -q "INTEGRITY AEAD ERROR" || fail "no INTEGRITY AEAD ERROR from dm-crypt"
	# Written again, the sector reads.
	write_at /dev/mapper/rs_ic 1048576 "$a"
	read_at /dev/mapper/rs_ic 1048576 1048576 | cmp -s - "$a" || fail "the rewritten sector does not read back"

	mkfs.ext4 -q /dev/mapper/rs_ic
	mnt=$SCRATCH/mnt
	mkdir "$mnt"
	mount /dev/mapper/rs_ic "$mnt"
	cp "$a" "$mnt/a"
	sync -f "$mnt/a"
	umount "$mnt"
	fsck.ext4 -fn /dev/mapper/rs_ic || fail "fsck found errors"
	mount /dev/mapper/rs_ic "$mnt"
	cmp -s "$mnt/a" "$a" || fail "the file differs after a remount"
	umount "$mnt"
	unstack
}

# integritysetup open --integrity-bitmap-mode drives ours (registered as "integrity"): the table
# line is mode B with its options, data written reads back, a clean close clears the flag, and
# the kernel's target then reads the data.
test_bitmap_integritysetup() {
	local loop a
	loop=$(make_loop 16)
	fmt "$loop" sha256 --integrity-bitmap-mode
	if [ "$DM_RUST_IMPL" = rust ]; then
		trap upstream_integrity_off EXIT
		upstream_integrity_on || fail "cannot put dm_rust with upstream names in place of dm-integrity"
	fi
	integritysetup open -I sha256 --integrity-bitmap-mode --bitmap-sectors-per-bit 4096 \
		--bitmap-flush-time 2000 "$loop" rs_is
	dmsetup table rs_is
	integritysetup status rs_is || fail "integritysetup status failed on the device"
	dmsetup table rs_is | grep -q ' integrity .* B .* sectors_per_bit:4096 bitmap_flush_interval:2000 ' ||
		fail "table line: $(dmsetup table rs_is)"
	a=$(random_file 2097152)
	write_at /dev/mapper/rs_is 1048576 "$a"
	read_at /dev/mapper/rs_is 1048576 2097152 | cmp -s - "$a" || fail "read back through integritysetup's device differs"
	dd if=/dev/mapper/rs_is of=/dev/null bs=1M iflag=direct status=none || fail "reading the whole device failed"
	integritysetup close rs_is
	sb_dirty "$loop" && fail "dirty-bitmap flag left after integritysetup close"
	if [ "$DM_RUST_IMPL" = rust ]; then
		trap - EXIT
		upstream_integrity_off
	fi
	integritysetup open -I sha256 --integrity-bitmap-mode "$loop" rs_k
	read_at /dev/mapper/rs_k 1048576 2097152 | cmp -s - "$a" || fail "the kernel's dm-integrity reads other data"
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	integritysetup close rs_k
}

# Formatting a blank device: in modes D, J and B, a zeroed device that the kernel's target
# formats (created with a one-sector table, then removed) and the same device zeroed again and
# formatted by $INTEG with the same table end up byte for byte the same (superblock, journal,
# and nothing else written; without fix_hmac there is no random salt). Then the kernel's target
# opens what ours formatted and writes, ours reads it back and writes, and the kernel's reads
# that. Ours refuses to format in mode R, or with what it does not implement, writing nothing.
test_format_like_kernel() {
	local loop mode impl sum opts="2 fix_padding internal_hash:crc32c" provided table a b
	local -A sums
	loop=$(make_loop $MB)
	for mode in D J B; do
		for impl in integrity "$INTEG"; do
			dd if=/dev/zero of="$loop" bs=1M count=$MB oflag=direct status=none
			dmsetup create rs_fmt --table "0 8 $impl $loop 0 - $mode $opts"
			dmsetup remove --retry rs_fmt
			blockdev --flushbufs "$loop"
			sums[$impl]=$(md5sum <"$loop")
			if [ "$impl" = integrity ]; then
				dd if="$loop" of="$SCRATCH/kernel.img" bs=1M iflag=direct status=none
			fi
		done
		echo "# mode $mode: superblock version $(sb_field "$loop" 8 u1), provided $(sb_field "$loop" 16 u8)"
		if [ "${sums[integrity]}" != "${sums[$INTEG]}" ]; then
			cmp -l "$SCRATCH/kernel.img" "$loop" | head -n 8
			fail "mode $mode: the device $INTEG formatted differs from the kernel's"
		fi
		rm -f "$SCRATCH/kernel.img"
	done
	# Ours formatted it last (mode B): the kernel's target opens it (mode J), ours reads that.
	provided=$(sb_field "$loop" 16 u8)
	[ "$provided" -gt 0 ] || fail "no provided sectors in the superblock"
	table="0 $provided integrity $loop 0 - J $opts"
	a=$(random_file 1048576)
	b=$(random_file 1048576)
	dmsetup create rs_k --table "$table"
	write_at /dev/mapper/rs_k 1048576 "$a"
	read_at /dev/mapper/rs_k 1048576 1048576 | cmp -s - "$a" || fail "the kernel's target reads other data"
	dmsetup remove --retry rs_k
	open_ours rs_int "0 $provided $INTEG $loop 0 - D $opts"
	read_at /dev/mapper/rs_int 1048576 1048576 | cmp -s - "$a" || fail "$INTEG reads other data than the kernel's wrote"
	write_at /dev/mapper/rs_int 4194304 "$b"
	# No mismatch count is checked: the device was not wiped, so udev's probe of never-written
	# blocks fails their (zero) tags in either target; the direct reads above fail on a mismatch.
	dmsetup remove --retry rs_int
	dmsetup create rs_k --table "$table"
	read_at /dev/mapper/rs_k 4194304 1048576 | cmp -s - "$b" || fail "the kernel's target reads other data than ours wrote"
	read_at /dev/mapper/rs_k 1048576 1048576 | cmp -s - "$a" || fail "the kernel's target lost its data"
	dmsetup remove --retry rs_k
	if [ "$DM_RUST_IMPL" = rust ]; then
		dd if=/dev/zero of="$loop" bs=1M count=$MB oflag=direct status=none
		expect_table_refused rs_int "Recovery mode (R) on a device without a superblock" \
			"0 8 $INTEG $loop 0 - R $opts"
		expect_table_refused rs_int "journal_crypt is not implemented" \
			"0 8 $INTEG $loop 0 - J 3 fix_padding internal_hash:crc32c journal_crypt:ctr(aes):00112233445566778899aabbccddeeff"
		blockdev --flushbufs "$loop"
		cmp -s "$loop" <(head -c $((MB * 1048576)) /dev/zero) || fail "a refused table wrote to the blank device"
	fi
}

# Plain integritysetup format (with its wipe: zeroes written through a temporary device) on ours
# registered as "integrity", then open, write, read back, close; the kernel's dm-integrity then
# reads the whole device with no integrity error.
test_format_integritysetup() {
	local loop a
	loop=$(make_loop $MB)
	if [ "$DM_RUST_IMPL" = rust ]; then
		trap upstream_integrity_off EXIT
		upstream_integrity_on || fail "cannot put dm_rust with upstream names in place of dm-integrity"
	fi
	integritysetup format --batch-mode -I crc32c "$loop" || fail "integritysetup format failed"
	integritysetup dump "$loop"
	integritysetup open -I crc32c "$loop" rs_is
	a=$(random_file 1048576)
	write_at /dev/mapper/rs_is 2097152 "$a"
	read_at /dev/mapper/rs_is 2097152 1048576 | cmp -s - "$a" || fail "read back through integritysetup's device differs"
	dd if=/dev/mapper/rs_is of=/dev/null bs=1M iflag=direct status=none || fail "reading the whole device failed"
	integritysetup close rs_is
	if [ "$DM_RUST_IMPL" = rust ]; then
		trap - EXIT
		upstream_integrity_off
	fi
	integritysetup open -I crc32c "$loop" rs_k
	read_at /dev/mapper/rs_k 2097152 1048576 | cmp -s - "$a" || fail "the kernel's dm-integrity reads other data"
	dd if=/dev/mapper/rs_k of=/dev/null bs=1M iflag=direct status=none || fail "the kernel's dm-integrity finds integrity errors"
	[ "$(dmsetup status rs_k | awk '{ print $4 }')" = 0 ] || fail "the kernel's dm-integrity counts mismatches"
	integritysetup close rs_k
}

if ! integrity_setup; then
	ktap_plan 1
	run_test setup fail "cannot load dm-integrity and dm_rust without upstream names"
	ktap_finish
fi
ktap_plan 25
run_test round_trip_crc32c test_round_trip_crc32c
run_test hmac_fix_hmac test_hmac_fix_hmac
run_test hmac_legacy test_hmac_legacy
run_test corrupted_sector test_corrupted_sector
run_test discards test_discards
run_test bad_superblock test_bad_superblock
run_test racing_reads_and_writes test_racing_reads_and_writes
run_test recalculate test_recalculate
run_test recalculate_reset test_recalculate_reset
run_test recalculate_suspend test_recalculate_suspend
run_test recalculate_messages test_recalculate_messages
run_test bitmap_ext4 test_bitmap_ext4
run_test bitmap_interop test_bitmap_interop
run_test bitmap_crash test_bitmap_crash
run_test bitmap_reload test_bitmap_reload
run_test bitmap_journal_to_replay test_bitmap_journal_to_replay
run_test journal_replay test_journal_replay
run_test journal_replay_corrupt test_journal_replay_corrupt
run_test journal_integritysetup test_journal_integritysetup
run_test journal_ext4 test_journal_ext4
run_test journal_crash_interop test_journal_crash_interop
run_test tags_for_layer_above test_tags_for_layer_above
run_test bitmap_integritysetup test_bitmap_integritysetup
run_test format_like_kernel test_format_like_kernel
run_test format_integritysetup test_format_integritysetup
# The kernel's dm_integrity would keep dm_rust from loading with upstream names (a later script's
# verity) under the same name: unload it, and dm_rust loaded without upstream names.
rmmod dm_integrity 2>/dev/null || true
rmmod dm_crypt 2>/dev/null || true
[ "$DM_RUST_IMPL" != rust ] || unload_module 2>/dev/null || true
ktap_finish
