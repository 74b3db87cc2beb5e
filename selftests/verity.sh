#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# verity: the "verity" target driven by the real tools (veritysetup, dmsetup, losetup), table
# compatible with the kernel's dm-verity: data round trip, hash algorithms, block sizes, format
# versions, salts, hash offsets, corruption of data, of each hash tree level and of the root digest,
# every optional argument, signed root hashes, bad tables, and the security_bdev_setintegrity() hook
# that hands IPE the root hash (observed with bpftrace, selftests/bpf/setintegrity.bt). IPE itself
# is tested in verity_ipe.sh.
# DM_RUST_IMPL=rust (default: dm_rust with upstream_names=1) or kernel (dm-verity itself); see
# verity_lib.sh.
cd "$(dirname "$0")" && . ./lib.sh && . ./verity_lib.sh

test_format_open_verify_close() {
	local expected
	setup_image 4096
	[ ${#root} = 64 ] || fail "root hash '$root' is not a sha256 digest"
	veritysetup open "$dl" rs_v "$hl" "$root"
	cmp /dev/mapper/rs_v "$data" || fail "data read through rs_v differs from the image"
	[ "$(blockdev --getsz /dev/mapper/rs_v)" = 8192 ] || fail "size: $(blockdev --getsz /dev/mapper/rs_v)"
	veritysetup status rs_v
	veritysetup status rs_v | grep -qE 'status:[[:space:]]+verified' || fail "veritysetup status does not say verified"
	veritysetup verify "$dl" "$hl" "$root" || fail "veritysetup verify failed on a good image"
	veritysetup verify "$dl" "$hl" "$(echo "$root" | tr 0-9a-f 1-9a-f0)" 2>/dev/null &&
		fail "veritysetup verify accepted a wrong root hash"
	dmsetup status rs_v
	[ "$(dmsetup status rs_v)" = "0 8192 verity V -" ] || fail "status line: '$(dmsetup status rs_v)'"
	expected="0 8192 verity 1 $(majmin "$dl") $(majmin "$hl") 4096 4096 1024 1 sha256 $root $salt"
	dmsetup table rs_v
	[ "$(dmsetup table rs_v)" = "$expected" ] || fail "table line differs from '$expected'"
	# The table line reproduces the device.
	dmsetup create rs_v2 --readonly --table "$(dmsetup table rs_v)"
	[ "$(dmsetup table rs_v2)" = "$expected" ] || fail "table of the copy: '$(dmsetup table rs_v2)'"
	cmp /dev/mapper/rs_v2 "$data" || fail "data read through the copy differs"
	dmsetup remove --retry rs_v2
	# Read-only: the kernel says so, and writes fail.
	[ "$(blockdev --getro /dev/mapper/rs_v)" = 1 ] || fail "rs_v is not read-only"
	if dd if=/dev/zero of=/dev/mapper/rs_v bs=4096 count=1 oflag=direct conv=notrunc status=none 2>/dev/null; then
		fail "a write to rs_v succeeded"
	fi
	cmp /dev/mapper/rs_v "$data" || fail "data changed after a write attempt"
	veritysetup close rs_v
	dmsetup info rs_v >/dev/null 2>&1 && fail "rs_v still exists after veritysetup close"
	return 0
}

# Data read back for each hash, the digest length matching, and one corrupted block caught.
test_hash_algorithms() {
	local alg len
	for alg in sha1:40 sha256:64 sha512:128; do
		len=${alg#*:}
		alg=${alg%:*}
		setup_image 1024 --hash="$alg"
		[ ${#root} = "$len" ] || fail "$alg: root hash '$root' is not $len hex digits"
		veritysetup open "$dl" rs_v "$hl" "$root"
		[ "$(table_field rs_v 11)" = "$alg" ] || fail "$alg: algorithm in the table: $(dmsetup table rs_v)"
		[ "$(table_field rs_v 12)" = "$root" ] || fail "$alg: root digest in the table: $(dmsetup table rs_v)"
		cmp /dev/mapper/rs_v "$data" || fail "$alg: data differs"
		veritysetup verify "$dl" "$hl" "$root" --hash="$alg" || fail "$alg: veritysetup verify failed"
		corrupt_byte "$data" $((37 * 4096 + 100))
		expect_eio /dev/mapper/rs_v 4096 37
		expect_block /dev/mapper/rs_v 4096 36 "$data"
		expect_block /dev/mapper/rs_v 4096 38 "$data"
		[ "$(status_char rs_v)" = C ] || fail "$alg: status after corruption: $(dmsetup status rs_v)"
		veritysetup close rs_v
		echo "$alg: ok"
	done
}

# Data and hash block sizes, equal and different: data reads back, the table and the logical block
# size follow, and corruption is caught with the granularity of one data block.
test_block_sizes() {
	local sizes dbs hbs mid
	for sizes in 4096:4096 512:4096 4096:512 1024:2048; do
		dbs=${sizes%:*}
		hbs=${sizes#*:}
		setup_image 1024 --data-block-size="$dbs" --hash-block-size="$hbs"
		veritysetup open "$dl" rs_v "$hl" "$root"
		dmsetup table rs_v
		[ "$(table_field rs_v 7) $(table_field rs_v 8)" = "$dbs $hbs" ] || fail "$sizes: block sizes in the table"
		[ "$(table_field rs_v 9)" = $((1048576 / dbs)) ] || fail "$sizes: data blocks in the table"
		[ "$(blockdev --getss /dev/mapper/rs_v)" = "$dbs" ] ||
			fail "$sizes: logical block size $(blockdev --getss /dev/mapper/rs_v), not $dbs"
		cmp /dev/mapper/rs_v "$data" || fail "$sizes: data differs"
		mid=$((1048576 / dbs / 2 + 1))
		corrupt_byte "$data" $((mid * dbs + dbs - 1))
		expect_eio /dev/mapper/rs_v "$dbs" "$mid"
		expect_block /dev/mapper/rs_v "$dbs" $((mid - 1)) "$data"
		expect_block /dev/mapper/rs_v "$dbs" $((mid + 1)) "$data"
		veritysetup close rs_v
		echo "data block $dbs, hash block $hbs: ok"
	done
}

# Format versions and salts, two devices between them: version 0 (Chrome OS: the salt after the
# data) with veritysetup's largest salt (256 bytes), and version 1 with none ("-"). Each reads back,
# the table shows its version and salt, and a table with another salt fails every read; a table
# with the other version fails every read where there is a salt (the versions differ only in where
# it goes), and reads the same data where there is none. (rs_noscan_*: udev does not probe them,
# run_guest.sh.)
test_format_versions_and_salts() {
	local v s other s256
	s256=$(head -c 256 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
	for v in 0 1; do
		other=$((1 - v))
		s=$([ "$v" = 0 ] && echo "$s256" || echo -)
		setup_image 1024 --format="$v" --salt="$s"
		[ "$salt" = "$s" ] || fail "veritysetup format --salt=$s made salt '$salt'"
		veritysetup open "$dl" rs_v "$hl" "$root"
		dmsetup table rs_v
		[ "$(table_field rs_v 4)" = "$v" ] || fail "version in the table is not $v"
		[ "$(table_field rs_v 13)" = "$s" ] || fail "salt in the table is not $s"
		cmp /dev/mapper/rs_v "$data" || fail "version $v: data differs"
		dmsetup create rs_noscan_other --readonly --table "$(dmsetup table rs_v | awk -v o="$other" '{$4 = o; print}')"
		if [ "$s" = - ]; then
			cmp /dev/mapper/rs_noscan_other "$data" || fail "no salt: version $other reads other data than version $v"
		else
			expect_eio /dev/mapper/rs_noscan_other 4096 0
			expect_eio /dev/mapper/rs_noscan_other 4096 255
		fi
		dmsetup remove --retry rs_noscan_other
		dmsetup create rs_noscan_salt --readonly --table \
			"$(dmsetup table rs_v | awk -v s="$([ "$s" = - ] && echo 00 || echo -)" '{$13 = s; print}')"
		expect_eio /dev/mapper/rs_noscan_salt 4096 0
		dmsetup remove --retry rs_noscan_salt
		veritysetup close rs_v
		echo "version $v, salt $s: ok"
	done
}

# Hash tree on the data device itself, after the data (veritysetup --hash-offset).
test_hash_offset_same_device() {
	local img loop off=$((4 * 1048576)) expected
	img=$(data_file 5120)
	root=$(vformat --data-blocks=1024 --hash-offset="$off" "$img" "$img")
	salt=$(format_field Salt)
	loop=$(ro_loop "$img")
	veritysetup open --hash-offset="$off" "$loop" rs_v "$loop" "$root"
	expected="0 8192 verity 1 $(majmin "$loop") $(majmin "$loop") 4096 4096 1024 $((off / 4096 + 1)) sha256 $root $salt"
	dmsetup table rs_v
	[ "$(dmsetup table rs_v)" = "$expected" ] || fail "table line differs from '$expected'"
	head -c "$off" "$img" | cmp - /dev/mapper/rs_v || fail "data differs"
	# The hash tree is what is checked: corrupt its first hash block (after the superblock). The
	# first 128 blocks then fail: rs_noscan_v, which udev does not probe (run_guest.sh).
	veritysetup close rs_v
	corrupt_byte "$img" $((off + 4096 + 10))
	dmsetup create rs_noscan_v --readonly --table "$expected"
	expect_eio /dev/mapper/rs_noscan_v 4096 0
}

# One corrupted data block: EIO for that block only, no corrupted byte returned by any read,
# status C, and the kernel log names the block.
test_corrupt_data_block() {
	local mark out size
	setup_image 4096
	corrupt_byte "$data" $((100 * 4096 + 1234))
	veritysetup open "$dl" rs_v "$hl" "$root"
	[ "$(status_char rs_v)" = V ] || fail "status before any read: $(dmsetup status rs_v)"
	mark=$(kmsg_mark)
	expect_eio /dev/mapper/rs_v 4096 100
	expect_block /dev/mapper/rs_v 4096 99 "$data"
	expect_block /dev/mapper/rs_v 4096 101 "$data"
	expect_block /dev/mapper/rs_v 4096 0 "$data"
	expect_block /dev/mapper/rs_v 4096 1023 "$data"
	[ "$(status_char rs_v)" = C ] || fail "status after corruption: $(dmsetup status rs_v)"
	veritysetup status rs_v | grep -qE 'status:[[:space:]]+corrupted' || fail "veritysetup status does not say corrupted"
	dmesg_since "$mark" | grep -q 'data block 100 is corrupted' ||
		fail "the kernel log does not name data block 100: $(dmesg_since "$mark" | tail -n 3)"
	# A larger direct read over the block fails as a whole.
	if dd if=/dev/mapper/rs_v bs=65536 skip=6 count=1 iflag=direct of=/dev/null status=none 2>/dev/null; then
		fail "a 64 KiB read over block 100 succeeded"
	fi
	# A buffered read of everything stops at the block and returns only verified data before it.
	out=$(scratch out)
	echo 3 >/proc/sys/vm/drop_caches
	if dd if=/dev/mapper/rs_v of="$out" bs=4096 status=none 2>/dev/null; then
		fail "a buffered read of the whole device succeeded"
	fi
	size=$(stat -c %s "$out")
	[ "$size" -le $((100 * 4096)) ] || fail "the buffered read returned $size bytes, past block 100"
	head -c "$size" "$data" | cmp -s - "$out" || fail "the buffered read returned bytes that differ from the image"
	veritysetup verify "$dl" "$hl" "$root" 2>/dev/null && fail "veritysetup verify accepted the corrupted image"
	return 0
}

# Corrupt the hash block covering one data block at each level of a 3-level tree (sha256, 512-byte
# hash blocks: 16 digests a block, 1024 data blocks): that data block, and every other one under the
# corrupted hash block, fails with EIO; data blocks outside it still read. Then a wrong root digest:
# everything fails. (The devices are rs_noscan_*: udev does not probe them, run_guest.sh.)
test_corrupt_hash_levels() {
	local pristine bits=4 hbs=512 blocks=1024 levels=0 i pos hash_start d=600 covered idx off other
	local -a level_block
	setup_image 4096 --hash-block-size=$hbs
	pristine=$(scratch pristine)
	cp "$hash" "$pristine"
	veritysetup open "$dl" rs_v "$hl" "$root"
	hash_start=$(table_field rs_v 10)
	table=$(dmsetup table rs_v)
	veritysetup close rs_v
	losetup -d "$hl"
	# The tree geometry, as dm-verity computes it; veritysetup must agree.
	while [ $((bits * levels)) -lt 64 ] && [ $(((blocks - 1) >> (bits * levels))) -ne 0 ]; do
		levels=$((levels + 1))
	done
	[ "$levels" = 3 ] || fail "expected 3 levels, computed $levels"
	pos=$hash_start
	for ((i = levels - 1; i >= 0; i--)); do
		level_block[i]=$pos
		pos=$((pos + ((blocks + (1 << ((i + 1) * bits)) - 1) >> ((i + 1) * bits))))
	done
	echo "levels: $levels, level start blocks: ${level_block[*]}, hash end: $pos"
	[ "$(format_field 'Hash blocks')" = $((pos - hash_start)) ] ||
		fail "veritysetup reports $(format_field 'Hash blocks') hash blocks, the geometry gives $((pos - hash_start))"
	for ((i = 0; i < levels; i++)); do
		cp "$pristine" "$hash"
		idx=$((d >> ((i + 1) * bits)))
		off=$(((level_block[i] + idx) * hbs + ((d >> (i * bits)) & ((1 << bits) - 1)) * (hbs >> bits) + 7))
		corrupt_byte "$hash" "$off"
		hl=$(ro_loop "$hash")
		dmsetup create rs_noscan_v --readonly --table "$(echo "$table" | awk -v h="$(majmin "$hl")" '{$6 = h; print}')"
		covered=$((1 << ((i + 1) * bits)))
		expect_eio /dev/mapper/rs_noscan_v 4096 "$d"
		expect_eio /dev/mapper/rs_noscan_v 4096 $((d / covered * covered))
		expect_eio /dev/mapper/rs_noscan_v 4096 $(((d / covered + 1) * covered - 1 < blocks ? (d / covered + 1) * covered - 1 : blocks - 1))
		other=0
		if [ $((d / covered)) -ne 0 ]; then
			expect_block /dev/mapper/rs_noscan_v 4096 "$other" "$data"
		else
			# The top level: one hash block covers everything.
			expect_eio /dev/mapper/rs_noscan_v 4096 "$other"
		fi
		[ "$(status_char rs_noscan_v)" = C ] || fail "level $i: status $(dmsetup status rs_noscan_v)"
		dmsetup remove --retry rs_noscan_v
		losetup -d "$hl"
		echo "level $i (hash block $((level_block[i] + idx)), byte $off): detected"
	done
	# A wrong root digest: nothing verifies.
	cp "$pristine" "$hash"
	hl=$(ro_loop "$hash")
	dmsetup create rs_noscan_v --readonly --table \
		"$(echo "$table" | awk -v h="$(majmin "$hl")" '{$6 = h; $12 = substr($12, 1, 63) (substr($12, 64, 1) == "0" ? "1" : "0"); print}')"
	dmsetup table rs_noscan_v
	expect_eio /dev/mapper/rs_noscan_v 4096 0
	expect_eio /dev/mapper/rs_noscan_v 4096 "$d"
	expect_eio /dev/mapper/rs_noscan_v 4096 1023
	[ "$(status_char rs_noscan_v)" = C ] || fail "wrong root: status $(dmsetup status rs_noscan_v)"
}

# ignore_corruption: the corrupted block is returned (logged, status C) instead of EIO.
test_ignore_corruption() {
	local mark
	setup_image 1024
	corrupt_byte "$data" $((100 * 4096 + 9))
	veritysetup open --ignore-corruption "$dl" rs_v "$hl" "$root"
	dmsetup table rs_v
	dmsetup table rs_v | grep -q " $salt 1 ignore_corruption\$" || fail "ignore_corruption not in the table"
	mark=$(kmsg_mark)
	expect_block /dev/mapper/rs_v 4096 100 "$data"
	expect_block /dev/mapper/rs_v 4096 101 "$data"
	[ "$(status_char rs_v)" = C ] || fail "status: $(dmsetup status rs_v)"
	dmesg_since "$mark" | grep -q 'data block 100 is corrupted' || fail "corruption not logged"
	# The same table without the option: EIO.
	dmsetup create rs_strict --readonly --table "$(dmsetup table rs_v | sed 's/ 1 ignore_corruption$//')"
	expect_eio /dev/mapper/rs_strict 4096 100
}

# restart_on_corruption, panic_on_corruption, restart_on_error and panic_on_error would reboot or
# panic the guest when triggered: only check that the tables are accepted, shown back, and the
# device works on intact data; conflicting modes are refused.
test_error_modes_accepted() {
	local opts base
	setup_image 1024
	base="0 2048 verity 1 $(majmin "$dl") $(majmin "$hl") 4096 4096 256 1 sha256 $root $salt"
	for opts in "1 restart_on_corruption" "1 panic_on_corruption" "2 ignore_corruption restart_on_error" \
		"2 restart_on_corruption panic_on_error"; do
		dmsetup create rs_v --readonly --table "$base $opts"
		[ "$(dmsetup table rs_v)" = "$base $opts" ] || fail "table with '$opts': $(dmsetup table rs_v)"
		cmp /dev/mapper/rs_v "$data" || fail "data differs with '$opts'"
		[ "$(status_char rs_v)" = V ] || fail "status with '$opts'"
		dmsetup remove --retry rs_v
		echo "accepted: $opts"
	done
	# Options are case-insensitive and come back in canonical form.
	dmsetup create rs_v --readonly --table "$base 1 Restart_On_Corruption"
	[ "$(dmsetup table rs_v)" = "$base 1 restart_on_corruption" ] || fail "table: $(dmsetup table rs_v)"
	dmsetup remove --retry rs_v
	expect_ro_refused "Conflicting error handling parameters" "$base 2 ignore_corruption restart_on_corruption"
	expect_ro_refused "Conflicting error handling parameters" "$base 2 panic_on_corruption restart_on_corruption"
	expect_ro_refused "Conflicting error handling parameters" "$base 2 restart_on_error panic_on_error"
}

# ignore_zero_blocks: blocks whose hash is the hash of a zero block are not verified but returned
# as zeros, even if the data device holds something else there; other blocks are still verified.
test_ignore_zero_blocks() {
	data=$(data_file 1024 64-127)
	hash=$(scratch hash)
	root=$(vformat "$data" "$hash")
	dl=$(ro_loop "$data")
	hl=$(ro_loop "$hash")
	veritysetup open --ignore-zero-blocks "$dl" rs_z "$hl" "$root"
	dmsetup table rs_z
	dmsetup table rs_z | grep -q ' 1 ignore_zero_blocks$' || fail "ignore_zero_blocks not in the table"
	cmp /dev/mapper/rs_z "$data" || fail "data differs"
	dmsetup create rs_n --readonly --table "$(dmsetup table rs_z | sed 's/ 1 ignore_zero_blocks$//')"
	corrupt_byte "$data" $((70 * 4096 + 5))
	corrupt_byte "$data" $((10 * 4096 + 5))
	expect_zero_block /dev/mapper/rs_z 4096 70
	expect_zero_block /dev/mapper/rs_z 4096 71
	expect_eio /dev/mapper/rs_z 4096 10
	expect_block /dev/mapper/rs_z 4096 11 "$data"
	# Without the option the changed zero block is caught.
	expect_eio /dev/mapper/rs_n 4096 70
	expect_zero_block /dev/mapper/rs_n 4096 71
}

# check_at_most_once: a block verified once is not verified again, so a later corruption of it is
# not caught; a block never read is still verified; without the option every read is verified.
test_check_at_most_once() {
	setup_image 1024
	veritysetup open --check-at-most-once "$dl" rs_once "$hl" "$root"
	dmsetup table rs_once
	dmsetup table rs_once | grep -q ' 1 check_at_most_once$' || fail "check_at_most_once not in the table"
	dmsetup create rs_every --readonly --table "$(dmsetup table rs_once | sed 's/ 1 check_at_most_once$//')"
	expect_block /dev/mapper/rs_once 4096 100 "$data"
	expect_block /dev/mapper/rs_every 4096 100 "$data"
	corrupt_byte "$data" $((100 * 4096 + 77))
	corrupt_byte "$data" $((101 * 4096 + 77))
	sync
	echo 3 >/proc/sys/vm/drop_caches
	expect_block /dev/mapper/rs_once 4096 100 "$data"
	expect_eio /dev/mapper/rs_once 4096 101
	expect_eio /dev/mapper/rs_every 4096 100
	[ "$(status_char rs_every)" = C ] || fail "rs_every status: $(dmsetup status rs_every)"
}

# A root hash signed by the test key (trusted through the .platform keyring) is accepted; one
# signed over another root hash, or by an untrusted key, is refused at table load.
test_signed_root_hash() {
	local sig other_sig untrusted mark base key
	need_platform_cert
	setup_image 1024
	sig=$(scratch sig)
	sign_roothash "$root" "$sig"
	veritysetup open --root-hash-signature="$sig" "$dl" rs_s "$hl" "$root" ||
		fail "veritysetup open with a good signature failed: $(dmesg | tail -n 3)"
	dmsetup table rs_s
	dmsetup table rs_s | grep -qE ' 2 root_hash_sig_key_desc [^ ]+$' || fail "no root_hash_sig_key_desc in the table"
	cmp /dev/mapper/rs_s "$data" || fail "data differs"
	veritysetup close rs_s

	other_sig=$(scratch sig)
	sign_roothash "$(echo "$root" | tr 0-9a-f 1-9a-f0)" "$other_sig"
	mark=$(kmsg_mark)
	veritysetup open --root-hash-signature="$other_sig" "$dl" rs_s "$hl" "$root" 2>/dev/null &&
		fail "a signature over another root hash was accepted"
	dmsetup info rs_s >/dev/null 2>&1 && fail "rs_s exists"
	dmesg_since "$mark" | grep -q 'Root hash verification failed' ||
		fail "no 'Root hash verification failed' in the log: $(dmesg_since "$mark" | tail -n 3)"

	untrusted=$(scratch untrusted)
	untrusted_cert "$untrusted"
	sign_roothash "$root" "$other_sig" "$untrusted.key" "$untrusted.pem"
	mark=$(kmsg_mark)
	veritysetup open --root-hash-signature="$other_sig" "$dl" rs_s "$hl" "$root" 2>/dev/null &&
		fail "a signature by an untrusted key was accepted"
	dmesg_since "$mark" | grep -q 'Root hash verification failed' ||
		fail "no 'Root hash verification failed' in the log: $(dmesg_since "$mark" | tail -n 3)"

	# With dmsetup: the signature in a user key named by root_hash_sig_key_desc.
	base="0 2048 verity 1 $(majmin "$dl") $(majmin "$hl") 4096 4096 256 1 sha256 $root $salt"
	key=$(keyctl padd user rs_selftest_sig @u <"$sig")
	dmsetup create rs_s --readonly --table "$base 2 root_hash_sig_key_desc rs_selftest_sig"
	[ "$(dmsetup table rs_s)" = "$base 2 root_hash_sig_key_desc rs_selftest_sig" ] || fail "table: $(dmsetup table rs_s)"
	cmp /dev/mapper/rs_s "$data" || fail "data differs (dmsetup)"
	dmsetup remove --retry rs_s
	keyctl padd user rs_selftest_sig @u <"$other_sig" >/dev/null
	expect_ro_refused "Root hash verification failed" "$base 2 root_hash_sig_key_desc rs_selftest_sig"
	keyctl unlink "$key" @u >/dev/null
	expect_ro_refused "Invalid key specified" "$base 2 root_hash_sig_key_desc rs_selftest_sig"
}

test_bad_tables() {
	local d h big s257 fec fecl fec_table bad
	setup_image 1024
	d=$(majmin "$dl")
	h=$(majmin "$hl")
	local p="verity 1 $d $h"   # start of the arguments
	local rest="sha256 $root $salt"
	local good="0 2048 $p 4096 4096 256 1 $rest"
	# One or a few values of each kind of bad number: the parser's cases are host-tested
	# (rust/verity/table.rs); here each message must reach dmsetup's user.
	expect_table_refused rs_bad "Device must be readonly" "$good"
	expect_ro_refused "Not enough arguments" "0 2048 $p 4096 4096 256 1 sha256 $root"
	expect_ro_refused "Not enough arguments" "0 2048 verity"
	for bad in 2 1x; do
		expect_ro_refused "Invalid version" "0 2048 verity $bad $d $h 4096 4096 256 1 $rest"
	done
	expect_ro_refused "Data device lookup failed" "0 2048 verity 1 /dev/rs_nonexistent $h 4096 4096 256 1 $rest"
	expect_ro_refused "Hash device lookup failed" "0 2048 verity 1 $d /dev/rs_nonexistent 4096 4096 256 1 $rest"
	for bad in 1000 8192 4096x; do
		expect_ro_refused "Invalid data device block size" "0 2048 $p $bad 4096 256 1 $rest"
	done
	for bad in 3000 abc; do
		expect_ro_refused "Invalid hash device block size" "0 2048 $p 4096 $bad 256 1 $rest"
	done
	# Hash blocks larger than a page: dm-verity takes them (up to INT_MAX), ours refuses them.
	case $VERITY_IMPL in
	kernel)
		dmsetup create rs_bad --readonly --table "0 2048 $p 4096 8192 256 1 $rest" || fail "8192-byte hash blocks refused"
		dmsetup remove --retry rs_bad
		;;
	*) expect_ro_refused "Invalid hash device block size" "0 2048 $p 4096 8192 256 1 $rest" ;;
	esac
	for bad in 12x 4611686018427387904; do
		expect_ro_refused "Invalid data blocks" "0 2048 $p 4096 4096 $bad 1 $rest"
	done
	# The table maps more sectors than the data blocks hold.
	expect_ro_refused "Data device is too small" "0 2048 $p 4096 4096 255 1 $rest"
	# More data blocks than the data device holds (the hash device being large enough).
	big=$(make_loop 1)
	expect_ro_refused "too small for target" "0 4096 verity 1 $d $(majmin "$big") 4096 4096 512 1 $rest"
	for bad in 1x 4611686018427387904; do
		expect_ro_refused "Invalid hash start" "0 2048 $p 4096 4096 256 $bad $rest"
	done
	# Hash start beyond the end of the hash device.
	expect_ro_refused "Hash device is too small" "0 2048 $p 4096 4096 256 1000000 $rest"
	expect_ro_refused "Hash device is too small" "0 2048 $p 4096 4096 256 2 $rest"
	expect_ro_refused "Cannot initialize hash function" "0 2048 $p 4096 4096 256 1 rs_nohash $root $salt"
	expect_ro_refused "Invalid root digest" "0 2048 $p 4096 4096 256 1 sha256 $(printf 'zz%.0s' {1..32}) $salt"
	expect_ro_refused "Invalid root digest" "0 2048 $p 4096 4096 256 1 sha256 ${root:0:63} $salt"
	expect_ro_refused "Invalid root digest" "0 2048 $p 4096 4096 256 1 sha256 ${root}00 $salt"
	expect_ro_refused "Invalid root digest" "0 2048 $p 4096 4096 256 1 sha1 $root $salt"
	expect_ro_refused "Invalid root digest" "0 2048 $p 4096 4096 256 1 sha512 $root $salt"
	expect_ro_refused "Invalid salt" "0 2048 $p 4096 4096 256 1 sha256 $root abc"
	expect_ro_refused "Invalid salt" "0 2048 $p 4096 4096 256 1 sha256 $root zz"
	# A salt longer than veritysetup's 256 bytes: dm-verity has no limit, ours refuses it.
	s257=$(head -c 257 /dev/zero | od -An -v -tx1 | tr -d ' \n')
	case $VERITY_IMPL in
	kernel)
		dmsetup create rs_bad --readonly --table "0 2048 $p 4096 4096 256 1 sha256 $root $s257" ||
			fail "a 257-byte salt was refused"
		dmsetup remove --retry rs_bad
		;;
	*) expect_ro_refused "Invalid salt" "0 2048 $p 4096 4096 256 1 sha256 $root $s257" ;;
	esac
	expect_ro_refused "Unrecognized verity feature request" "$good 1 rs_frobnicate"
	expect_ro_refused "Unrecognized verity feature request" "$good 2 ignore_corruption rs_frobnicate"
	expect_ro_refused "Invalid number of feature args" "$good 2 ignore_corruption"
	expect_ro_refused "Invalid number of feature args" "$good x"
	expect_ro_refused "Invalid number of feature args" "$good 1"
	expect_ro_refused "Signature key not specified" "$good 1 root_hash_sig_key_desc"
	expect_ro_refused "Invalid key specified" "$good 2 root_hash_sig_key_desc rs_no_such_key"
	case $VERITY_IMPL in
	kernel) expect_ro_refused "Invalid fec_roots" "$good 2 fec_roots 1" ;;
	*) expect_ro_refused "FEC is not supported" "$good 2 fec_roots 1" ;;
	esac
	# A complete, valid FEC setup (veritysetup format --fec-device): dm-verity takes it, ours refuses
	# it. fec_blocks covers the data and hash blocks, in data blocks; the options are in the order
	# dm-verity prints them.
	fec=$(scratch fec)
	root=$(vformat --fec-device="$fec" --fec-roots=2 "$data" "$hash")
	salt=$(format_field Salt)
	fecl=$(ro_loop "$fec")
	fec_table="0 2048 $p 4096 4096 256 1 sha256 $root $salt 8 use_fec_from_device $(majmin "$fecl") fec_blocks $((256 + $(format_field 'Hash blocks'))) fec_start 0 fec_roots 2"
	case $VERITY_IMPL in
	kernel)
		veritysetup open --fec-device="$fecl" --fec-roots=2 "$dl" rs_fec "$hl" "$root" ||
			fail "veritysetup open with FEC failed"
		dmsetup table rs_fec
		[ "$(dmsetup table rs_fec)" = "$fec_table" ] || fail "veritysetup's FEC table is not '$fec_table'"
		cmp /dev/mapper/rs_fec "$data" || fail "data differs with FEC"
		veritysetup close rs_fec
		dmsetup create rs_fec --readonly --table "$fec_table"
		cmp /dev/mapper/rs_fec "$data" || fail "data differs with FEC (dmsetup)"
		dmsetup remove --retry rs_fec
		;;
	*)
		expect_ro_refused "FEC is not supported" "$fec_table"
		;;
	esac
	# After all that, the good table still works.
	dmsetup create rs_good --readonly --table "0 2048 $p 4096 4096 256 1 sha256 $root $salt"
	cmp /dev/mapper/rs_good "$data" || fail "the good table does not read back"
}

# security_bdev_setintegrity(), watched with bpftrace: each resume hands the LSMs the algorithm and
# root digest of the live table (and a SIG_VALID call: empty without a signature, the signature's
# size with one); a reload takes effect at resume; a failed reload changes nothing.
# bpftrace takes half a minute or more to start under emulation: start_hook runs it in the
# background when the script starts, the test waits for it, stop_hook ends it with the script.
hook_pid=
hook_out=$SCRATCH/.hook.out
hook_from=0
start_hook() {
	rm -f "$hook_out" "$hook_out.err"
	command -v bpftrace >/dev/null || return 0
	bpftrace /dm-rust/selftests/bpf/setintegrity.bt >"$hook_out" 2>"$hook_out.err" &
	hook_pid=$!
}
stop_hook() {
	[ -n "$hook_pid" ] || return 0
	kill -INT "$hook_pid" 2>/dev/null
	wait "$hook_pid" 2>/dev/null
	hook_pid=
}

# hook_lines <dev maj:min>: the device's events after line $hook_from of the output, one a line:
# "ROOTHASH <alg> <len> <hex digest>", "ROOTHASH null", "SIG_VALID <size>".
hook_lines() {
	tail -n +$((hook_from + 1)) "$hook_out" | sed -n "s/^SETINTEGRITY dev=$1 type=//p" | awk '
		$1 == "ROOTHASH" && $2 == "value=null" { print "ROOTHASH null"; next }
		$1 == "ROOTHASH" { d = ""; for (i = 4; i <= NF; i++) d = d $i; sub(/^digest=/, "", d);
				   sub(/^alg=/, "", $2); sub(/^len=/, "", $3); print "ROOTHASH", $2, $3, d; next }
		$1 == "SIG_VALID" { sub(/^size=/, "", $2); print "SIG_VALID", $2; next }
		{ print }'
}

hook_count_ge() { [ "$(hook_lines "$1" | wc -l)" -ge "$2" ]; }

# wait_hook <dev> <count>: waits until the device has <count> events (at most 20 s).
wait_hook() {
	wait_for 20 hook_count_ge "$1" "$2" ||
		fail "$1: $2 setintegrity events expected, got: $(hook_lines "$1" | tr '\n' ';')"
}

# hook_sync: a suspend and resume of the device rs_hsync ($sync_dev), waited for in bpftrace's
# output: every call made before it is in the output then (instead of waiting for a while to see
# that a call did not come).
hook_sync() {
	local n
	n=$(hook_lines "$sync_dev" | wc -l)
	dmsetup suspend rs_hsync
	dmsetup resume rs_hsync
	wait_hook "$sync_dev" $((n + 2))
}

# expect_hook <dev> <event number (1-based)> <expected line>
expect_hook() {
	wait_hook "$1" "$2"
	[ "$(hook_lines "$1" | sed -n "${2}p")" = "$3" ] ||
		fail "$1: event $2 is '$(hook_lines "$1" | sed -n "${2}p")', expected '$3'"
}

test_setintegrity_hook() {
	local rA tA rB tB rC tC dev sig key mark sync_dev
	command -v bpftrace >/dev/null || skip "bpftrace is not installed in the guest"
	[ -n "$hook_pid" ] || fail "bpftrace was not started"
	# Three images: A, B (sha256) and C (sha512).
	setup_image 1024
	rA=$root tA="0 2048 verity 1 $(majmin "$dl") $(majmin "$hl") 4096 4096 256 1 sha256 $root $salt"
	local dataA=$data
	setup_image 1024
	rB=$root tB="0 2048 verity 1 $(majmin "$dl") $(majmin "$hl") 4096 4096 256 1 sha256 $root $salt"
	local dataB=$data
	setup_image 1024 --hash=sha512
	rC=$root tC="0 2048 verity 1 $(majmin "$dl") $(majmin "$hl") 4096 4096 256 1 sha512 $root $salt"
	local dataC=$data
	hook_started() { grep -q '^READY' "$hook_out" || ! kill -0 "$hook_pid" 2>/dev/null; }
	wait_for 180 hook_started || fail "bpftrace did not start in 180 s: $(tail -n 3 "$hook_out.err")"
	grep -q '^READY' "$hook_out" || fail "bpftrace ended: $(tail -n 3 "$hook_out.err")"
	hook_from=$(wc -l <"$hook_out")
	dmsetup create rs_hsync --readonly --table "$tA"
	sync_dev=$(dmsetup info -c --noheadings -o major,minor rs_hsync | tr -d ' ')
	wait_hook "$sync_dev" 2

	dmsetup create rs_h --readonly --table "$tA"
	dev=$(dmsetup info -c --noheadings -o major,minor rs_h | tr -d ' ')
	echo "rs_h is $dev"
	expect_hook "$dev" 1 "ROOTHASH sha256 32 $rA"
	expect_hook "$dev" 2 "SIG_VALID 0"
	cmp /dev/mapper/rs_h "$dataA" || fail "A: data differs"
	# A resume without a new table repeats the live table's values.
	dmsetup suspend rs_h
	dmsetup resume rs_h
	expect_hook "$dev" 3 "ROOTHASH sha256 32 $rA"
	expect_hook "$dev" 4 "SIG_VALID 0"
	# A reload is not live (and not announced) before the resume.
	dmsetup reload --readonly rs_h --table "$tB"
	hook_sync
	[ "$(hook_lines "$dev" | wc -l)" = 4 ] || fail "events after a reload without resume: $(hook_lines "$dev" | tail -n +5)"
	cmp /dev/mapper/rs_h "$dataA" || fail "the reloaded table is live before the resume"
	dmsetup resume rs_h
	expect_hook "$dev" 5 "ROOTHASH sha256 32 $rB"
	expect_hook "$dev" 6 "SIG_VALID 0"
	cmp /dev/mapper/rs_h "$dataB" || fail "B: data differs"
	# Another algorithm.
	dmsetup reload --readonly rs_h --table "$tC"
	dmsetup resume rs_h
	expect_hook "$dev" 7 "ROOTHASH sha512 64 $rC"
	expect_hook "$dev" 8 "SIG_VALID 0"
	cmp /dev/mapper/rs_h "$dataC" || fail "C: data differs"
	# A refused reload: no call, the old table stays, in force and announced again at the next resume.
	mark=$(kmsg_mark)
	if dmsetup reload --readonly rs_h --table "${tB% *} zz" 2>/dev/null; then
		fail "a table with a bad salt was accepted"
	fi
	dmesg_since "$mark" | grep -q 'Invalid salt' || fail "the reload was not refused for its salt: $(dmesg_since "$mark" | tail -n 2)"
	hook_sync
	[ "$(hook_lines "$dev" | wc -l)" = 8 ] || fail "events after a refused reload: $(hook_lines "$dev" | tail -n +9)"
	[ "$(dmsetup table rs_h)" = "$tC" ] ||
		fail "table after a refused reload: $(dmsetup table rs_h)"
	dmsetup info rs_h | grep -q 'Tables present: *LIVE$' || fail "an inactive table is present: $(dmsetup info rs_h)"
	cmp /dev/mapper/rs_h "$dataC" || fail "data differs after a refused reload"
	dmsetup suspend rs_h
	dmsetup resume rs_h
	expect_hook "$dev" 9 "ROOTHASH sha512 64 $rC"
	expect_hook "$dev" 10 "SIG_VALID 0"
	dmsetup remove --retry rs_h

	# A signed root hash: SIG_VALID carries the signature (needs the test key in .platform).
	need_platform_cert
	sig=$(scratch sig)
	sign_roothash "$rA" "$sig"
	key=$(keyctl padd user rs_selftest_hook @u <"$sig")
	# Device numbers are reused: only what comes after this point counts.
	hook_from=$(wc -l <"$hook_out")
	dmsetup create rs_hs --readonly --table "$tA 2 root_hash_sig_key_desc rs_selftest_hook"
	keyctl unlink "$key" @u >/dev/null
	dev=$(dmsetup info -c --noheadings -o major,minor rs_hs | tr -d ' ')
	expect_hook "$dev" 1 "ROOTHASH sha256 32 $rA"
	expect_hook "$dev" 2 "SIG_VALID $(stat -c %s "$sig")"
	echo "signed: SIG_VALID with $(stat -c %s "$sig") bytes"
	echo "events of this test:"
	tail -n +$((hook_from + 1)) "$hook_out"
}

ktap_plan 15
if ! verity_use_impl; then
	echo "# could not select the verity implementation '$VERITY_IMPL'"
fi
start_hook
vrun impl_selected test_impl_selected
vrun format_open_verify_close test_format_open_verify_close
vrun hash_algorithms test_hash_algorithms
vrun block_sizes test_block_sizes
vrun format_versions_and_salts test_format_versions_and_salts
vrun hash_offset_same_device test_hash_offset_same_device
vrun corrupt_data_block test_corrupt_data_block
vrun corrupt_hash_levels test_corrupt_hash_levels
vrun ignore_corruption test_ignore_corruption
vrun error_modes_accepted test_error_modes_accepted
vrun ignore_zero_blocks test_ignore_zero_blocks
vrun check_at_most_once test_check_at_most_once
vrun signed_root_hash test_signed_root_hash
vrun bad_tables test_bad_tables
vrun setintegrity_hook test_setintegrity_hook
stop_hook
verity_restore_impl
ktap_finish
