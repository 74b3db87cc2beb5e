#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# inlinecrypt-rs (dm-inlinecrypt's table line, on blk-crypto): on loop devices, which have no
# inline encryption hardware, so blk-crypto's software fallback encrypts. The ciphertext on disk
# equals what the kernel's dm-crypt writes with aes-xts-plain64 (and iv_large_sectors) for the same
# key, sector size, iv_offset and offset, so a disk moves between the two both ways; a file system
# lives on it; keys from the keyring; table line, discards, flushes; bad tables refused; and
# device-mapper's inline-crypto capability is not claimed where the device below has none.
# The kernel's dm-inlinecrypt is not built by Debian (CONFIG_DM_INLINECRYPT off): no reference run;
# dm-crypt is the reference for the data.
cd "$(dirname "$0")" && . ./lib.sh

ICRYPT=inlinecrypt-rs

# A random AES-256-XTS key (64 bytes) in hex.
hexkey() {
	od -An -tx1 -N64 /dev/urandom | tr -d ' \n'
}

# opts <sector size>: the optional arguments both targets take for it.
opts() {
	[ "$1" = 512 ] || echo " 2 sector_size:$1 iv_large_sectors"
}

dm_node() {
	basename "$(readlink -f "/dev/mapper/$1")"
}

# ciphertext_vs_dm_crypt <sector size> <iv_offset> <offset>: the same data written through
# inlinecrypt-rs on one loop device and through dm-crypt on another gives the same bytes on both;
# then each reads what the other wrote.
ciphertext_vs_dm_crypt() {
	local ss=$1 iv=$2 start=$3 key loop1 loop2 len data off o
	key=$(hexkey)
	loop1=$(make_loop 8)
	loop2=$(make_loop 8)
	len=$((8192 * 2 - start - 8))
	[ $((len % (ss / 512))) = 0 ] || fail "test setup: length $len"
	dmsetup create rs_inl --table "0 $len $ICRYPT aes-xts-plain64 $key $iv $loop1 $start$(opts "$ss")"
	dmsetup create rs_crypt --table "0 $len crypt aes-xts-plain64 $key $iv $loop2 $start$(opts "$ss")"
	[ "$(blockdev --getss /dev/mapper/rs_inl)" = "$ss" ] ||
		fail "logical block size of rs_inl is $(blockdev --getss /dev/mapper/rs_inl), not $ss"
	data=$(random_file 1048576)
	# The first and the last MiB, and one starting one data unit past a MiB.
	for off in 0 $((1048576 + ss)) $((len * 512 - 1048576)); do
		write_at /dev/mapper/rs_inl "$off" "$data"
		write_at /dev/mapper/rs_crypt "$off" "$data"
		read_at "$loop1" $((start * 512 + off)) 1048576 | cmp -s - "$data" &&
			fail "plaintext on the disk at $off: nothing encrypted"
		read_at /dev/mapper/rs_inl "$off" 1048576 | cmp -s - "$data" ||
			fail "read back through rs_inl differs at $off"
	done
	o=$(cmp <(read_at "$loop1" 0 8388608) <(read_at "$loop2" 0 8388608)) ||
		fail "ciphertext differs from dm-crypt's (sector_size $ss, iv_offset $iv, offset $start): $o"
	echo "sector_size $ss, iv_offset $iv, offset $start: ciphertext equals dm-crypt's"
	dmsetup remove rs_inl
	dmsetup remove rs_crypt
	# Each reads the other's disk.
	dmsetup create rs_crypt --table "0 $len crypt aes-xts-plain64 $key $iv $loop1 $start$(opts "$ss")"
	dmsetup create rs_inl --table "0 $len $ICRYPT aes-xts-plain64 $key $iv $loop2 $start$(opts "$ss")"
	for off in 0 $((1048576 + ss)) $((len * 512 - 1048576)); do
		read_at /dev/mapper/rs_crypt "$off" 1048576 | cmp -s - "$data" ||
			fail "dm-crypt does not read at $off what inlinecrypt-rs wrote"
		read_at /dev/mapper/rs_inl "$off" 1048576 | cmp -s - "$data" ||
			fail "inlinecrypt-rs does not read at $off what dm-crypt wrote"
	done
	# A different iv_offset reads something else: the DUN depends on it.
	dmsetup remove rs_inl
	dmsetup create rs_inl --table "0 $len $ICRYPT aes-xts-plain64 $key $((iv + ss / 512)) $loop2 $start$(opts "$ss")"
	read_at /dev/mapper/rs_inl 0 1048576 | cmp -s - "$data" && fail "iv_offset made no difference"
	return 0
}

test_ciphertext_512() {
	ciphertext_vs_dm_crypt 512 7 3
}

test_ciphertext_4096() {
	ciphertext_vs_dm_crypt 4096 24 8
}

# ext4 on inlinecrypt-rs: made, filled, synced, checked, and read again through dm-crypt.
test_filesystem() {
	local key loop mnt f sums ss=4096 len
	key=$(hexkey)
	loop=$(make_loop 64)
	len=$((64 * 2048))
	dmsetup create rs_inl --table "0 $len $ICRYPT aes-xts-plain64 $key 0 $loop 0$(opts $ss)"
	mkfs.ext4 -q -b 4096 /dev/mapper/rs_inl
	mnt=$SCRATCH/mnt
	mkdir -p "$mnt"
	mount /dev/mapper/rs_inl "$mnt"
	mkdir -p "$mnt/d/e"
	head -c 3000000 /dev/urandom >"$mnt/d/big"
	head -c 5000 /dev/urandom >"$mnt/d/e/small"
	cp "$mnt/d/big" "$mnt/copy"
	dd if=/dev/urandom of="$mnt/synced" bs=65536 count=16 conv=fsync status=none
	sums=$(cd "$mnt" && md5sum d/big d/e/small copy synced)
	umount "$mnt"
	fsck.ext4 -fn /dev/mapper/rs_inl || fail "fsck.ext4 found errors on rs_inl"
	mount /dev/mapper/rs_inl "$mnt"
	[ "$(cd "$mnt" && md5sum d/big d/e/small copy synced)" = "$sums" ] || fail "files differ after a remount"
	umount "$mnt"
	dmsetup remove rs_inl
	# The same disk through the kernel's dm-crypt.
	dmsetup create rs_crypt --table "0 $len crypt aes-xts-plain64 $key 0 $loop 0$(opts $ss)"
	fsck.ext4 -fn /dev/mapper/rs_crypt || fail "fsck.ext4 through dm-crypt found errors"
	mount -o ro /dev/mapper/rs_crypt "$mnt"
	[ "$(cd "$mnt" && md5sum d/big d/e/small copy synced)" = "$sums" ] || fail "files differ through dm-crypt"
	umount "$mnt"
	echo "ext4 written through inlinecrypt-rs is clean and the same through dm-crypt"
}

# A logon key from the keyring: the same ciphertext as the key in hex, the table line names the
# key (not its bytes), wrong size, missing key and other key types refused.
test_keyring_key() {
	local key loop1 loop2 id data majmin
	key=$(hexkey)
	loop1=$(make_loop 4)
	loop2=$(make_loop 4)
	majmin=$(lsblk -dno MAJ:MIN "$loop1" | tr -d ' ')
	# shellcheck disable=SC2059
	id=$(printf "$(echo "$key" | sed 's/../\\x&/g')" | keyctl padd logon rs_inline:k @u)
	# In the user keyring, which dmsetup's searches reach (@s would be a new session keyring of
	# keyctl's own). The key is the test's: dropped whatever happens.
	trap 'keyctl unlink '"$id"' @u >/dev/null 2>&1 || true' EXIT
	dmsetup create rs_inl --table "0 8192 $ICRYPT aes-xts-plain64 :64:logon:rs_inline:k 0 $loop1 0"
	dmsetup create rs_hex --table "0 8192 $ICRYPT aes-xts-plain64 $key 0 $loop2 0"
	data=$(random_file 1048576)
	write_at /dev/mapper/rs_inl 4096 "$data"
	write_at /dev/mapper/rs_hex 4096 "$data"
	cmp -s <(read_at "$loop1" 0 4194304) <(read_at "$loop2" 0 4194304) ||
		fail "the keyring key does not encrypt as the same key in hex"
	dmsetup table rs_inl
	[ "$(dmsetup table --showkeys rs_inl)" = "0 8192 $ICRYPT aes-xts-plain64 :64:logon:rs_inline:k 0 $majmin 0" ] ||
		fail "table line: $(dmsetup table rs_inl)"
	expect_table_refused rs_bad "Malformed key string" "0 8192 $ICRYPT aes-xts-plain64 :32:logon:rs_inline:k 0 $loop1 0"
	expect_table_refused rs_bad "Malformed key string" "0 8192 $ICRYPT aes-xts-plain64 :64:logon:rs_inline:missing 0 $loop1 0"
	expect_table_refused rs_bad "Malformed key string" "0 8192 $ICRYPT aes-xts-plain64 :64:user:rs_inline:k 0 $loop1 0"
	expect_table_refused rs_bad "Cannot parse key size" "0 8192 $ICRYPT aes-xts-plain64 :x:logon:rs_inline:k 0 $loop1 0"
	# A revoked key is refused too.
	keyctl revoke "$id"
	expect_table_refused rs_bad "Malformed key string" "0 8192 $ICRYPT aes-xts-plain64 :64:logon:rs_inline:k 0 $loop1 0"
}

# The table line as dm-inlinecrypt writes it (less its key type number, see
# Documentation/inlinecrypt.md), reloadable; no status; no inline-crypto capability passed up.
test_table_and_status() {
	local key loop majmin line
	key=$(hexkey)
	loop=$(make_loop 8)
	majmin=$(lsblk -dno MAJ:MIN "$loop" | tr -d ' ')
	dmsetup create rs_inl --table "0 8192 $ICRYPT aes-xts-plain64 ${key^^} 16 $loop 64 4 allow_discards iv_large_sectors keytype:raw sector_size:4096"
	line=$(dmsetup table --showkeys rs_inl)
	echo "$line"
	[ "$line" = "0 8192 $ICRYPT aes-xts-plain64 $key 16 $majmin 64 3 allow_discards sector_size:4096 iv_large_sectors" ] ||
		fail "table line differs"
	[ "$(dmsetup status rs_inl)" = "0 8192 $ICRYPT " ] || fail "status line: '$(dmsetup status rs_inl)'"
	dmsetup create rs_inl2 --table "$line" || fail "the table line does not load again"
	[ "$(dmsetup table --showkeys rs_inl2)" = "$line" ] || fail "reloaded table line differs"
	dmsetup create rs_plain --table "0 8192 $ICRYPT aes-xts-plain64 $key 0 $loop 0"
	[ "$(dmsetup table --showkeys rs_plain)" = "0 8192 $ICRYPT aes-xts-plain64 $key 0 $majmin 0" ] ||
		fail "table line without options: $(dmsetup table --showkeys rs_plain)"
	[ ! -e "/sys/block/$(dm_node rs_inl)/queue/crypto" ] ||
		fail "inlinecrypt-rs passes an inline-crypto capability up"
}

# Discards pass only with allow_discards; flushes always reach the device.
test_discards_and_flushes() {
	local key loop d0 d1 f0 f1 data
	key=$(hexkey)
	loop=$(make_loop 8)
	dmsetup create rs_inl --table "0 8192 $ICRYPT aes-xts-plain64 $key 0 $loop 0"
	[ "$(cat "/sys/block/$(dm_node rs_inl)/queue/discard_max_bytes")" = 0 ] ||
		fail "discards advertised without allow_discards"
	dmsetup remove rs_inl
	dmsetup create rs_inl --table "0 8192 $ICRYPT aes-xts-plain64 $key 0 $loop 0 1 allow_discards"
	data=$(random_file 1048576)
	write_at /dev/mapper/rs_inl 0 "$data"
	d0=$(disk_stat "$loop" 12)
	blkdiscard -o 0 -l 1048576 /dev/mapper/rs_inl
	d1=$(disk_stat "$loop" 12)
	[ "$d1" -gt "$d0" ] || fail "no discard reached $loop"
	read_at "$loop" 0 1048576 | cmp -s - <(head -c 1048576 /dev/zero) ||
		fail "discarded range still holds data on $loop"
	f0=$(disk_stat "$loop" 16)
	dd if="$data" of=/dev/mapper/rs_inl bs=4096 count=4 oflag=direct status=none conv=fsync
	f1=$(disk_stat "$loop" 16)
	[ "$f1" -gt "$f0" ] || fail "fsync of rs_inl sent no flush to $loop"
}

# blk-crypto's capability (/sys/block/*/queue/crypto/) reaches a mapped device only where the
# devices below have it. A loop device has none, so linear-rs (DM_TARGET_PASSES_CRYPTO) must not
# show one. (A device with the capability, to show it passed up, is not in the guest.)
test_crypto_capability_not_claimed() {
	local loop
	loop=$(make_loop 4)
	[ ! -e "/sys/block/$(basename "$loop")/queue/crypto" ] || skip "the loop device has inline encryption"
	dmsetup create rs_lin --table "0 8192 linear-rs $loop 0"
	[ -d "/sys/block/$(dm_node rs_lin)/queue" ] || fail "no queue directory for rs_lin"
	[ ! -e "/sys/block/$(dm_node rs_lin)/queue/crypto" ] ||
		fail "linear-rs over $loop claims an inline-crypto capability $loop lacks"
}

test_bad_tables() {
	local key loop t k32
	key=$(hexkey)
	k32=${key:0:64}
	loop=$(make_loop 4)
	t="0 8192 $ICRYPT"
	expect_table_refused rs_bad "Not enough arguments" "$t aes-xts-plain64 $key 0 $loop"
	expect_table_refused rs_bad "Unsupported cipher" "$t aes-cbc-essiv:sha256 $key 0 $loop 0"
	expect_table_refused rs_bad "Unsupported cipher" "$t aes-xts-plain $key 0 $loop 0"
	expect_table_refused rs_bad "Cannot parse key size" "$t aes-xts-plain64 ${key}0 0 $loop 0"
	expect_table_refused rs_bad "Malformed key string" "$t aes-xts-plain64 ${key:2}zz 0 $loop 0"
	expect_table_refused rs_bad "Invalid iv_offset sector" "$t aes-xts-plain64 $key -1 $loop 0"
	expect_table_refused rs_bad "Device lookup failed" "$t aes-xts-plain64 $key 0 /dev/does-not-exist 0"
	expect_table_refused rs_bad "Invalid start sector" "$t aes-xts-plain64 $key 0 $loop 12x"
	expect_table_refused rs_bad "Invalid number of feature args" "$t aes-xts-plain64 $key 0 $loop 0 5 a b c d e"
	expect_table_refused rs_bad "Invalid number of feature args" "$t aes-xts-plain64 $key 0 $loop 0 2 allow_discards"
	expect_table_refused rs_bad "Too many arguments" "$t aes-xts-plain64 $key 0 $loop 0 1 allow_discards extra"
	expect_table_refused rs_bad "Invalid block key type" "$t aes-xts-plain64 $key 0 $loop 0 1 keytype:wrapped"
	expect_table_refused rs_bad "Invalid sector_size" "$t aes-xts-plain64 $key 0 $loop 0 2 sector_size:1000 iv_large_sectors"
	expect_table_refused rs_bad "Invalid sector_size" "$t aes-xts-plain64 $key 0 $loop 0 2 sector_size:8192 iv_large_sectors"
	expect_table_refused rs_bad "iv_large_sectors must be specified" "$t aes-xts-plain64 $key 0 $loop 0 1 sector_size:4096"
	expect_table_refused rs_bad "Invalid feature arguments" "$t aes-xts-plain64 $key 0 $loop 0 1 bogus"
	expect_table_refused rs_bad "Unsupported feature argument same_cpu_crypt" "$t aes-xts-plain64 $key 0 $loop 0 1 same_cpu_crypt"
	expect_table_refused rs_bad "Device size is not a multiple of sector_size" "0 8191 $ICRYPT aes-xts-plain64 $key 0 $loop 0 2 sector_size:4096 iv_large_sectors"
	expect_table_refused rs_bad "Wrong alignment of iv_offset sector" "$t aes-xts-plain64 $key 4 $loop 0 2 sector_size:4096 iv_large_sectors"
	# A 32-byte key is AES-128-XTS's: blk-crypto's AES-256-XTS refuses it.
	expect_table_refused rs_bad "Error initializing blk-crypto key" "$t aes-xts-plain64 $k32 0 $loop 0"
	# A hardware-wrapped key needs inline encryption hardware, which a loop device lacks.
	expect_table_refused rs_bad "Error starting to use blk-crypto" "$t aes-xts-plain64 $key 0 $loop 0 1 keytype:hw-wrapped"
	# The area must fit the device (device-mapper's check, through iterate_devices).
	expect_table_refused rs_bad "too small for target" "0 8192 $ICRYPT aes-xts-plain64 $key 0 $loop 1"
}

if [ "$DM_RUST_IMPL" != rust ]; then
	echo "inlinecrypt.sh: the kernel's dm-inlinecrypt is not built (CONFIG_DM_INLINECRYPT off): ours only" >&2
	exit 2
fi
load_module
modprobe -a dm-crypt xts 2>/dev/null || true
tests=(ciphertext_512 ciphertext_4096 filesystem keyring_key table_and_status discards_and_flushes
	crypto_capability_not_claimed bad_tables)
ktap_plan ${#tests[@]}
for t in "${tests[@]}"; do
	run_test "$t" "test_$t"
done
ktap_finish
