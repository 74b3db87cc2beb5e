#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# verity under faults: the data device and the hash device failing (every read through the
# kernel's error target, one block through a linear+error table, intermittently and with
# corrupted reads through dm-flakey) give EIO and never data that was not verified; a forged hash
# block with matching data; corruption found after dm-bufio evicted the verified hash blocks;
# multi-block reads with a corrupted block at either end; the last block; direct reads racing a
# writer in the read buffer (the re-check path); readers across suspend/reload/resume and a
# deferred remove.
# VERITY_IMPL=rust (default) or kernel, as for verity.sh (see verity_lib.sh).
cd "$(dirname "$0")" && . ./lib.sh && . ./verity_lib.sh && . ./fault_lib.sh

# A formatted image of $1 KiB: $data, $hash, $root, $salt, read-only loops $dl and $hl, and the
# table line of a verity device over them in $table (superblock at hash block 0).
image() {
	local kib=$1
	data=$(data_file "$kib")
	hash=$(scratch hash)
	root=$(vformat "$data" "$hash")
	salt=$(format_field Salt)
	dl=$(ro_loop "$data")
	hl=$(ro_loop "$hash")
	nblocks=$((kib / 4))
	vtable "$dl" "$hl"
}

# vtable <data device> <hash device>: the table line of the current image over those devices.
vtable() {
	table="0 $((nblocks * 8)) verity 1 $1 $2 4096 4096 $nblocks 1 sha256 $root $salt"
}

# hash_block_of <data block>: the hash device block holding that block's digest (level 0).
hash_block_of() {
	python3 - "$data" "$hash" "$salt" "$1" <<'EOF'
import hashlib, sys
data, hashf, salt, blk = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
with open(data, "rb") as f:
    f.seek(blk * 4096)
    d = hashlib.sha256(salt + f.read(4096)).digest()
h = open(hashf, "rb").read()
pos = h.find(d)
assert pos >= 0 and h.find(d, pos + 1) < 0, "digest not found once"
print(pos // 4096)
EOF
}

# forge <data block>: replaces the data block with new bytes and its digest in the hash file with
# theirs, as an attacker who can write both devices (but not the root hash) would.
forge() {
	python3 - "$data" "$hash" "$salt" "$1" <<'EOF'
import hashlib, os, sys
data, hashf, salt, blk = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
with open(data, "r+b") as f:
    f.seek(blk * 4096)
    old = hashlib.sha256(salt + f.read(4096)).digest()
    new_block = os.urandom(4096)
    f.seek(blk * 4096)
    f.write(new_block)
new = hashlib.sha256(salt + new_block).digest()
with open(hashf, "r+b") as f:
    h = f.read()
    pos = h.find(old)
    assert pos >= 0, "old digest not found"
    f.seek(pos)
    f.write(new)
EOF
}

# read_or_eio <dev> <block> <reference file>: one direct read gives the reference's block, or EIO
# and no data. Prints "good" or "eio"; anything else fails the test.
read_or_eio() {
	rm -f "$SCRATCH/out"
	if dd_read "$1" 4096 "$2" 1 "$SCRATCH/out" 2>"$SCRATCH/err"; then
		dd if="$3" bs=4096 skip="$2" count=1 status=none | cmp -s - "$SCRATCH/out" ||
			fail "block $2 was read without error but is not the verified data"
		echo good
	else
		grep -q 'Input/output error' "$SCRATCH/err" || fail "block $2: $(cat "$SCRATCH/err")"
		[ ! -s "$SCRATCH/out" ] || fail "a failed read of block $2 returned $(stat -c %s "$SCRATCH/out") bytes"
		echo eio
	fi
}

# Random single-block reads until both outcomes were seen at least $3 times (or only EIO with
# $4 = eio-only); every read must be good or EIO.
reads_good_or_eio() {
	local dev=$1 ref=$2 min=$3 mode=${4:-both} good=0 eio=0 n=0 r deadline=$((SECONDS + 90))
	while :; do
		if [ "$mode" = both ]; then
			[ $good -ge "$min" ] && [ $eio -ge "$min" ] && break
		else
			[ $((good + eio)) -ge $((min * 4)) ] && [ $eio -ge "$min" ] && break
		fi
		[ $SECONDS -lt $deadline ] || fail "after $n reads: $good good, $eio EIO"
		r=$(read_or_eio "$dev" $((RANDOM % nblocks)) "$ref")
		case $r in good) good=$((good + 1)) ;; eio) eio=$((eio + 1)) ;; *) fail "$r" ;; esac
		n=$((n + 1))
	done
	echo "$n reads: $good verified, $eio EIO"
}

test_data_device_fails() {
	image 4096
	dmsetup create rs_derr --readonly --table "0 $((nblocks * 8)) error"
	vtable /dev/mapper/rs_derr "$hl"
	dmsetup create rs_v --readonly --table "$table"
	expect_eio /dev/mapper/rs_v 4096 0
	expect_eio /dev/mapper/rs_v 4096 517
	expect_eio /dev/mapper/rs_v 4096 $((nblocks - 1))
	expect_io_error "a buffered read of the device" timeout 120 cat /dev/mapper/rs_v
	[ "$(status_char rs_v)" = V ] || fail "an I/O error is not corruption, status: $(dmsetup status rs_v)"
}

test_data_block_fails() {
	image 4096
	dmsetup create rs_dpart --readonly --table "0 2400 linear $dl 0
2400 8 error
2408 $((nblocks * 8 - 2408)) linear $dl 2408"
	vtable /dev/mapper/rs_dpart "$hl"
	dmsetup create rs_v --readonly --table "$table"
	expect_eio /dev/mapper/rs_v 4096 300
	expect_block /dev/mapper/rs_v 4096 299 "$data"
	expect_block /dev/mapper/rs_v 4096 301 "$data"
	expect_eio /dev/mapper/rs_v 65536 18
	expect_eio /dev/mapper/rs_v 4096 300
	if cmp -s /dev/mapper/rs_v "$data"; then fail "the whole device read without error"; fi
	[ "$(status_char rs_v)" = V ] || fail "status: $(dmsetup status rs_v)"
}

test_hash_device_fails() {
	local hsz
	image 4096
	hsz=$(sectors "$hl")
	dmsetup create rs_herr --readonly --table "0 $hsz error"
	vtable "$dl" /dev/mapper/rs_herr
	dmsetup create rs_v --readonly --table "$table"
	expect_eio /dev/mapper/rs_v 4096 0
	expect_eio /dev/mapper/rs_v 4096 $((nblocks - 1))
	expect_io_error "a buffered read of the device" timeout 120 cat /dev/mapper/rs_v
}

# One level-0 hash block unreadable: exactly the data blocks whose digests it holds fail.
test_hash_block_fails() {
	local hb hsz
	image 4096
	hb=$(hash_block_of 384)
	[ "$(hash_block_of 511)" = "$hb" ] && [ "$(hash_block_of 383)" != "$hb" ] &&
		[ "$(hash_block_of 512)" != "$hb" ] || fail "digests of blocks 384..511 not in one hash block"
	echo "digests of data blocks 384..511 are in hash block $hb"
	hsz=$(sectors "$hl")
	dmsetup create rs_hpart --readonly --table "0 $((hb * 8)) linear $hl 0
$((hb * 8)) 8 error
$((hb * 8 + 8)) $((hsz - hb * 8 - 8)) linear $hl $((hb * 8 + 8))"
	vtable "$dl" /dev/mapper/rs_hpart
	dmsetup create rs_v --readonly --table "$table"
	expect_eio /dev/mapper/rs_v 4096 384
	expect_eio /dev/mapper/rs_v 4096 511
	expect_eio /dev/mapper/rs_v 4096 450
	expect_block /dev/mapper/rs_v 4096 383 "$data"
	expect_block /dev/mapper/rs_v 4096 512 "$data"
	expect_block /dev/mapper/rs_v 4096 0 "$data"
	expect_eio /dev/mapper/rs_v 4096 400
}

# dm-flakey failing all reads of the data device one second out of two.
test_flakey_data_errors() {
	image 4096
	dmsetup create rs_flakey --readonly --table "0 $((nblocks * 8)) flakey $dl 0 1 1"
	vtable /dev/mapper/rs_flakey "$hl"
	dmsetup create rs_v --readonly --table "$table"
	reads_good_or_eio /dev/mapper/rs_v "$data" 5
}

# dm-flakey corrupting a random byte of half the reads of the data device: each read is the
# verified data or EIO, never the corrupted bytes.
test_flakey_data_corruption() {
	image 4096
	dmsetup create rs_flakey --readonly --table \
		"0 $((nblocks * 8)) flakey $dl 0 0 1 2 random_read_corrupt 500000000"
	vtable /dev/mapper/rs_flakey "$hl"
	dmsetup create rs_v --readonly --table "$table"
	reads_good_or_eio /dev/mapper/rs_v "$data" 5
}

# The same below the hash device.
test_flakey_hash_corruption() {
	local hsz
	image 4096
	hsz=$(sectors "$hl")
	dmsetup create rs_flakey --readonly --table "0 $hsz flakey $hl 0 0 1 2 random_read_corrupt 500000000"
	vtable "$dl" /dev/mapper/rs_flakey
	dmsetup create rs_v --readonly --table "$table"
	reads_good_or_eio /dev/mapper/rs_v "$data" 3 eio-only
}

# A data block replaced together with its digest in the level-0 hash block: the level-0 block no
# longer matches the level above, so the block (and its neighbours under the same hash block)
# fail, and the status says corruption.
test_forged_leaf_hash() {
	local hb
	image 4096
	hb=$(hash_block_of 700)
	forge 700
	[ "$(hash_block_of 700)" = "$hb" ] || fail "the forged digest is not where the old one was"
	dmsetup create rs_v --readonly --table "$table"
	expect_eio /dev/mapper/rs_v 4096 700
	expect_eio /dev/mapper/rs_v 4096 701
	[ "$(status_char rs_v)" = C ] || fail "status after a forged hash block: $(dmsetup status rs_v)"
	expect_block /dev/mapper/rs_v 4096 0 "$data"
}

bufio_param() {
	cat "/sys/module/dm_bufio/parameters/$1"
}
# bufio_below <bytes>: dm-bufio's cache is at most that big, after asking every shrinker to
# give memory back (dm-bufio keeps retain_bytes per client from its shrinker).
bufio_below() {
	echo 3 >/proc/sys/vm/drop_caches
	[ "$(bufio_param current_allocated_bytes)" -le "$1" ]
}

# dm-bufio's cache shrunk to nothing: after a full read, the verified hash blocks are evicted; a
# hash block changed underneath is read again, checked again, and found corrupt.
test_corruption_after_bufio_eviction() {
	local hb
	image 65536
	hb=$(hash_block_of 0)
	dmsetup create rs_v --readonly --table "$table"
	set_param /sys/module/dm_bufio/parameters/max_cache_size_bytes 65536
	set_param /sys/module/dm_bufio/parameters/retain_bytes 0
	cmp /dev/mapper/rs_v "$data" || fail "the image does not read back"
	expect_block /dev/mapper/rs_v 4096 $((nblocks - 1)) "$data"
	# 128 level-0 hash blocks were read; wait until fewer than half of them are cached.
	if ! (wait_until 30 bufio_below $((64 * 4096))); then
		grep . /sys/module/dm_bufio/parameters/*
		fail "dm-bufio did not shrink below 256 KiB"
	fi
	echo "dm-bufio holds $(bufio_param current_allocated_bytes) bytes after the full read"
	# The byte is in the digest of data block 1 (sha256: 32 bytes each): block 0's own digest is
	# intact, so only the check of the re-read hash block itself (against level 1) can fail the
	# read of block 0. A target that trusted the block because it verified it before the eviction
	# would return block 0.
	corrupt_byte "$hash" $((hb * 4096 + 32 + 5))
	expect_eio /dev/mapper/rs_v 4096 0
	[ "$(status_char rs_v)" = C ] || fail "status: $(dmsetup status rs_v)"
	restore_params
}

# Reads of 16 blocks with the corrupted block first, in the middle and last all fail.
test_multi_block_reads() {
	image 4096
	corrupt_byte "$data" $((40 * 4096 + 4095))
	dmsetup create rs_v --readonly --table "$table"
	expect_eio /dev/mapper/rs_v 65536 $((40 / 16))
	rm -f "$SCRATCH/out"
	for first in 40 33 25; do
		# One 64 KiB read (one bio of 16 blocks), from block $first.
		if dd if=/dev/mapper/rs_v bs=65536 skip=$((first * 4096)) count=1 iflag=direct,skip_bytes of="$SCRATCH/out" status=none 2>/dev/null; then
			fail "a 16-block read from block $first, covering corrupted block 40, succeeded"
		fi
		[ ! -s "$SCRATCH/out" ] || fail "a failed read from block $first returned data"
	done
	dd if=/dev/mapper/rs_v bs=65536 skip=$((41 * 4096)) count=1 iflag=direct,skip_bytes of="$SCRATCH/out" status=none ||
		fail "16 blocks after the corrupted one do not read"
	dd if="$data" bs=4096 skip=41 count=16 status=none | cmp -s - "$SCRATCH/out" || fail "blocks 41..56 differ"
	dd if=/dev/mapper/rs_v bs=65536 skip=$((24 * 4096)) count=1 iflag=direct,skip_bytes of="$SCRATCH/out" status=none ||
		fail "16 blocks before the corrupted one do not read"
}

# The last data block, on a cold cache, with the hash device exactly as long as the tree: it reads,
# is checked (a corrupted last block fails), and no I/O goes past the end of either device.
test_last_block() {
	local mark
	image 4096
	mark=$(fmark)
	dmsetup create rs_v --readonly --table "$table"
	expect_block /dev/mapper/rs_v 4096 $((nblocks - 1)) "$data"
	cmp /dev/mapper/rs_v "$data" || fail "the image does not read back"
	if fsince "$mark" | grep -E 'beyond end of device|I/O error'; then
		fail "I/O outside the devices, or I/O errors, reading a healthy image"
	fi
	dmsetup remove rs_v
	corrupt_byte "$data" $((nblocks * 4096 - 1))
	# rs_noscan_*: udev does not probe it (its last block fails; run_guest.sh).
	dmsetup create rs_noscan_v --readonly --table "$table"
	expect_eio /dev/mapper/rs_noscan_v 4096 $((nblocks - 1))
	expect_block /dev/mapper/rs_noscan_v 4096 $((nblocks - 2)) "$data"
	if fsince "$mark" | grep -E 'beyond end of device'; then
		fail "I/O outside the devices"
	fi
}

# Direct reads while another thread writes into the read buffer: the target may hash bytes the
# writer changed after the device below filled the buffer; that must be re-checked against the
# device, not reported as corruption.
test_direct_io_recheck() {
	local prog mark
	prog=$(build_helper dio_race)
	image 16384
	mark=$(fmark)
	dmsetup create rs_v --readonly --table "$table"
	"$prog" /dev/mapper/rs_v "$nblocks" 2000 || fail "direct reads failed while a writer raced into the buffer"
	[ "$(status_char rs_v)" = V ] || fail "corruption reported: $(dmsetup status rs_v)"
	if fsince "$mark" | grep -i corrupt; then fail "corruption logged"; fi
	cmp /dev/mapper/rs_v "$data" || fail "the image does not read back afterwards"
}

# reader <dev> <reference> <first block> <blocks> <passes>: direct reads compared with the image.
reader() {
	local i
	for i in $(seq "$5"); do
		dd if="$1" bs=65536 skip=$(($3 / 16)) count=$(($4 / 16)) iflag=direct status=none 2>>"$SCRATCH/reader.err" |
			cmp -s - <(dd if="$2" bs=65536 skip=$(($3 / 16)) count=$(($4 / 16)) status=none) || return 1
	done
}

# 4 readers across suspend/reload/resume cycles, then across remove --deferred: every byte read
# is the image's, and the device goes away once the last reader closes it.
test_readers_suspend_remove() {
	local pids p cycles=0
	image 16384
	dmsetup create rs_v --readonly --table "$table"
	pids=()
	for p in 0 1 2 3; do
		reader /dev/mapper/rs_v "$data" $((p * 1024)) 1024 3 &
		pids+=($!)
	done
	while kill -0 "${pids[@]}" 2>/dev/null; do
		dmsetup suspend rs_v || fail "suspend failed"
		dmsetup reload --readonly rs_v --table "$table" || fail "reload failed"
		dmsetup resume rs_v || fail "resume failed"
		cycles=$((cycles + 1))
		sleep 0.2
	done
	for p in "${pids[@]}"; do wait "$p" || fail "a reader read wrong data or failed: $(cat "$SCRATCH/reader.err")"; done
	[ $cycles -ge 2 ] || fail "only $cycles suspend/resume cycles while the readers ran"
	echo "$cycles suspend/reload/resume cycles under 4 readers"
	# Each read opens the device anew: a holder keeps it open across the readers' reopenings (a
	# device marked for deferred removal still accepts opens), and its close is the last one.
	exec 7</dev/mapper/rs_v
	pids=()
	for p in 0 1 2 3; do
		reader /dev/mapper/rs_v "$data" $((p * 1024)) 1024 2 &
		pids+=($!)
	done
	wait_until 60 dm_open rs_v
	dmsetup remove --deferred rs_v || { exec 7<&-; fail "remove --deferred failed"; }
	for p in "${pids[@]}"; do
		wait "$p" || { exec 7<&-; fail "a reader failed across the deferred remove: $(cat "$SCRATCH/reader.err")"; }
	done
	dmsetup info rs_v >/dev/null 2>&1 || { exec 7<&-; fail "rs_v removed while still open"; }
	exec 7<&-
	wait_until 30 dm_absent rs_v
}

MARK=$(fmark)
trap restore_params EXIT
fault_modules
verity_use_impl
ktap_plan 16
run_test impl_selected test_impl_selected
run_test data_device_fails test_data_device_fails
run_test data_block_fails test_data_block_fails
run_test hash_device_fails test_hash_device_fails
run_test hash_block_fails test_hash_block_fails
run_test flakey_data_errors test_flakey_data_errors
run_test flakey_data_corruption test_flakey_data_corruption
run_test flakey_hash_corruption test_flakey_hash_corruption
run_test forged_leaf_hash test_forged_leaf_hash
run_test corruption_after_bufio_eviction test_corruption_after_bufio_eviction
restore_params
run_test multi_block_reads test_multi_block_reads
run_test last_block test_last_block
run_test direct_io_recheck test_direct_io_recheck
run_test readers_suspend_remove test_readers_suspend_remove
run_test kernel_log_clean kernel_log_clean_since "$MARK"
run_test settings_restored sh -c '[ ! -e "$0" ]' "$FAULT_RESTORE"
verity_restore_impl
ktap_finish
