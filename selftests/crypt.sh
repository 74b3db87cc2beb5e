#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# crypt: the "crypt" target driven by cryptsetup (plain, LUKS2 with its keyring key, ext4 on it,
# luksSuspend/luksResume) and dmsetup (messages, bad tables); ciphertext written by ours reads
# back through the kernel's dm-crypt and the other way round, for aes-xts-plain64 at sector sizes
# 512 and 4096 and aes-cbc-essiv:sha256; table and status lines equal to the kernel's.
# DM_RUST_IMPL=rust (default): dm_rust.ko; with upstream_names=1 it registers "crypt", which
#   cryptsetup then drives; for the comparisons it is loaded without upstream names ("crypt-rs")
#   beside the kernel's dm_crypt ("crypt").
# DM_RUST_IMPL=kernel: the kernel's dm_crypt everywhere (the comparisons then compare it with
#   itself): the reference run, which shows that what the tests expect is what dm-crypt does.
#   The random_key_* tests skip there: the random key (:<bytes>:random) is ours only.
cd "$(dirname "$0")" && . ./lib.sh

CRYPT_BLOCK_CONF=/etc/modprobe.d/dm-rust-selftest-crypt.conf
# A 512-bit key (aes-xts with two AES-256 keys), a 256-bit one (cbc-essiv).
KEY64=3a1f9c07d2e48b65f0c3a97e1d2b4c58e6f70819a2b3c4d5e6f708192a3b4c5d7e8f90a1b2c3d4e5f60718293a4b5c6d8e9fa0b1c2d3e4f5061728394a5b6c7d
KEY32=${KEY64:0:64}

# Loads the kernel's dm_crypt by its file: with packaging/dm-rust.conf installed (verity's scripts
# do that), "modprobe dm_crypt" would load dm_rust instead.
load_kernel_crypt() {
	local ko
	module_loaded dm_crypt && return 0
	ko=$(find "/lib/modules/$(uname -r)/kernel/drivers/md" -name 'dm-crypt.ko*' | head -n 1)
	[ -n "$ko" ] || { echo "# the kernel's dm-crypt.ko is missing"; return 1; }
	modprobe -a $(modinfo -F depends "$ko" | tr , ' ')
	insmod "$ko"
}

crypt_registered() { dmsetup targets | grep -q "^$1 "; }
module_loaded() { grep -q "^$1 " /proc/modules; }

# "crypt" is ours (rust) or the kernel's (kernel); cryptsetup uses it. Run between tests, not in
# one: (re)loading dm_rust changes its parameters, which the harness's gates would count against
# the test. Prints what it did; returns non-zero if it could not (the tests then fail).
use_upstream_crypt() {
	modprobe -a dm-mod dm-bufio
	if [ "$DM_RUST_IMPL" = kernel ]; then
		rm -f "$CRYPT_BLOCK_CONF"
		load_kernel_crypt || return 1
	else
		if module_loaded dm_crypt; then
			rmmod dm_crypt || { echo "# the kernel's dm_crypt is busy"; return 1; }
		fi
		if module_loaded dm_verity; then
			rmmod dm_verity || { echo "# the kernel's dm_verity is busy"; return 1; }
		fi
		# Device-mapper must not load the kernel's dm_crypt behind our back.
		echo "install dm_crypt /bin/false" >"$CRYPT_BLOCK_CONF"
		if module_loaded dm_rust && ! crypt_registered crypt; then
			rmmod dm_rust || { echo "# dm_rust is busy"; return 1; }
		fi
		module_loaded dm_rust || insmod "$DM_RUST_KO" upstream_names=1 || return 1
	fi
	crypt_registered crypt || { echo "# no crypt target"; return 1; }
	dmsetup targets | grep '^crypt ' | sed 's/^/# /'
}

# OURS and THEIRS: ours as crypt-rs beside the kernel's crypt (rust), or crypt twice (kernel).
# Run between tests, as use_upstream_crypt.
use_both() {
	modprobe -a dm-mod dm-bufio
	rm -f "$CRYPT_BLOCK_CONF"
	if [ "$DM_RUST_IMPL" = kernel ]; then
		OURS=crypt
	else
		if module_loaded dm_rust && ! crypt_registered crypt-rs; then
			rmmod dm_rust || { echo "# dm_rust is busy"; return 1; }
		fi
		module_loaded dm_rust || insmod "$DM_RUST_KO" || return 1
		OURS=crypt-rs
	fi
	load_kernel_crypt || return 1
	THEIRS=crypt
	echo "# ours: $OURS, the kernel's: $THEIRS"
}

# Each test checks that the target it needs is there (the set-up above ran before it).
need_upstream() { crypt_registered crypt || fail "no crypt target (see the set-up's comments)"; }

zeroes() { printf '0%.0s' $(seq "$1"); }

majmin() { lsblk -dno MAJ:MIN "$1" | tr -d ' '; }

# The key field of a table line (the 5th word of dmsetup table's output).
table_key() { dmsetup table "$@" | awk '{ print $5 }'; }

test_plain_open() {
	local loop data keyfile
	need_upstream
	loop=$(make_loop 16)
	keyfile=$SCRATCH/key
	# shellcheck disable=SC2059
	printf "$(printf '%s' "$KEY64" | sed 's/../\\x&/g')" >"$keyfile"
	[ "$(stat -c %s "$keyfile")" = 64 ] || fail "key file"
	cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file "$keyfile" "$loop" rs_plain
	cryptsetup status rs_plain
	cryptsetup status rs_plain | grep -q 'cipher:  *aes-xts-plain64' || fail "cryptsetup status: cipher"
	cryptsetup status rs_plain | grep -q 'keysize: *512 bits' || fail "cryptsetup status: key size"
	data=$(random_file 1048576)
	write_at /dev/mapper/rs_plain 4096 "$data"
	read_at /dev/mapper/rs_plain 4096 1048576 | cmp -s - "$data" || fail "data read back differs"
	read_at "$loop" 4096 1048576 | cmp -s - "$data" && fail "the device below holds the plaintext"
	# dmsetup hides the key of a crypt target, --showkeys shows it.
	[ "$(table_key rs_plain)" = "$(zeroes 128)" ] || fail "key not hidden: $(dmsetup table rs_plain)"
	[ "$(table_key --showkeys rs_plain)" = "$KEY64" ] || fail "--showkeys does not show the key"
	[ "$(dmsetup status rs_plain)" = "0 32768 crypt " ] || fail "status: '$(dmsetup status rs_plain)'"
	cryptsetup close rs_plain
	dmsetup info rs_plain >/dev/null 2>&1 && fail "rs_plain still exists after close"
	return 0
}

# The page cache's copy of written data stays plaintext: a write must never be encrypted in the
# submitter's pages.
test_page_cache_stays_plain() {
	local loop data
	need_upstream
	loop=$(make_loop 8)
	dmsetup create rs_pc --table "0 16384 crypt aes-xts-plain64 $KEY64 0 $loop 0"
	data=$(random_file 262144)
	# Held open: the last close of a block device drops its page cache.
	exec 3</dev/mapper/rs_pc
	dd if="$data" of=/dev/mapper/rs_pc bs=65536 conv=notrunc,fsync status=none
	# Read through the page cache (not dropped): the pages the write went out from.
	dd if=/dev/mapper/rs_pc bs=65536 count=4 status=none | cmp -s - "$data" ||
		fail "the page cache holds something else than what was written"
	exec 3<&-
	echo 1 >/proc/sys/vm/drop_caches
	dd if=/dev/mapper/rs_pc bs=65536 count=4 status=none | cmp -s - "$data" ||
		fail "data read from the device differs"
}

test_luks2_filesystem() {
	local loop keyfile mnt data
	need_upstream
	loop=$(make_loop 48)
	keyfile=$SCRATCH/key
	head -c 64 /dev/urandom >"$keyfile"
	cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--cipher aes-xts-plain64 --key-size 512 --sector-size 4096 --key-file "$keyfile" "$loop"
	cryptsetup open --key-file "$keyfile" "$loop" rs_luks
	dmsetup table rs_luks
	# LUKS2 hands the volume key to the target in the kernel keyring.
	table_key rs_luks | grep -q '^:64:logon:cryptsetup:' || fail "no keyring key in the table"
	dmsetup table rs_luks | grep -q ' 1 sector_size:4096$' || fail "no sector_size:4096 in the table"
	cryptsetup status rs_luks | grep -q 'sector size: *4096' || fail "cryptsetup status: sector size"
	mkfs.ext4 -q /dev/mapper/rs_luks
	mnt=$SCRATCH/mnt
	mkdir "$mnt"
	mount /dev/mapper/rs_luks "$mnt"
	data=$(random_file 3145728)
	cp "$data" "$mnt/file"
	sync -f "$mnt/file"
	umount "$mnt"
	fsck.ext4 -fn /dev/mapper/rs_luks || fail "fsck found errors"
	# Suspend wipes the key: resume without one is refused; luksResume loads it again.
	cryptsetup luksSuspend rs_luks
	dmsetup info rs_luks | grep -q SUSPENDED || fail "not suspended after luksSuspend"
	[ "$(table_key --showkeys rs_luks)" = "$(zeroes 128)" ] ||
		fail "key not wiped by luksSuspend: $(table_key --showkeys rs_luks)"
	dmsetup resume rs_luks 2>/dev/null && fail "resume without a key succeeded"
	dmesg | tail -n 5 | grep -q "aborting resume - crypt key is not set" || fail "no log line for the refused resume"
	cryptsetup luksResume --key-file "$keyfile" rs_luks
	dmsetup info rs_luks | grep -q ACTIVE || fail "not active after luksResume"
	mount /dev/mapper/rs_luks "$mnt"
	cmp "$mnt/file" "$data" || fail "file differs after remount"
	umount "$mnt"
	cryptsetup close rs_luks
}

# Key messages as dm-crypt: only while suspended; key wipe forbids resuming until key set.
test_key_messages() {
	local loop data
	need_upstream
	loop=$(make_loop 8)
	dmsetup create rs_msg --table "0 16384 crypt aes-xts-plain64 $KEY64 0 $loop 0"
	data=$(random_file 65536)
	write_at /dev/mapper/rs_msg 0 "$data"
	dmsetup message rs_msg 0 key wipe 2>/dev/null && fail "key wipe accepted while not suspended"
	dmsetup message rs_msg 0 hello world 2>/dev/null && fail "an unknown message was accepted"
	dmsetup suspend rs_msg
	dmsetup message rs_msg 0 key wipe
	dmsetup resume rs_msg 2>/dev/null && fail "resume accepted after key wipe"
	dmsetup message rs_msg 0 key set "${KEY64:0:64}" 2>/dev/null && fail "key set of another size accepted"
	dmsetup message rs_msg 0 key set "$KEY64"
	dmsetup resume rs_msg
	read_at /dev/mapper/rs_msg 0 65536 | cmp -s - "$data" || fail "data differs after key set"
}

# Same table through ours and through the kernel's dm-crypt: each reads what the other wrote,
# and both print the same table and status.
cross_check() {
	local spec=$1 key=$2 ivoff=$3 opts=$4 loop len=16384 t1 t2 data
	loop=$(make_loop 10)
	local table="0 $len %s $spec $key $ivoff $loop 2048${opts:+ $opts}"
	# shellcheck disable=SC2059
	dmsetup create rs_ours --table "$(printf "$table" "$OURS")"
	# shellcheck disable=SC2059
	dmsetup create rs_theirs --table "$(printf "$table" "$THEIRS")"
	t1=$(dmsetup table --showkeys rs_ours | cut -d' ' -f4-)
	t2=$(dmsetup table --showkeys rs_theirs | cut -d' ' -f4-)
	echo "ours:   $t1"
	[ "$t1" = "$t2" ] || fail "$spec: table differs from the kernel's: '$t2'"
	[ "$(dmsetup status rs_ours | cut -d' ' -f4-)" = "$(dmsetup status rs_theirs | cut -d' ' -f4-)" ] ||
		fail "$spec: status differs"
	data=$(random_file 2097152)
	write_at /dev/mapper/rs_ours 1048576 "$data"
	read_at /dev/mapper/rs_theirs 1048576 2097152 | cmp -s - "$data" ||
		fail "$spec $opts: written by ours, the kernel's reads something else"
	data=$(random_file 2097152)
	write_at /dev/mapper/rs_theirs 4096 "$data"
	read_at /dev/mapper/rs_ours 4096 2097152 | cmp -s - "$data" ||
		fail "$spec $opts: written by the kernel's, ours reads something else"
	dmsetup remove rs_ours
	dmsetup remove rs_theirs
	echo "$spec $ivoff $opts: same ciphertext"
}

test_same_ciphertext_as_kernel() {
	[ -n "${OURS:-}" ] && crypt_registered "$OURS" && crypt_registered "$THEIRS" ||
		fail "$OURS or $THEIRS missing (see the set-up's comments)"
	cross_check aes-xts-plain64 "$KEY64" 0 ""
	cross_check aes-xts-plain64 "$KEY64" 24 "1 sector_size:4096"
	cross_check aes-xts-plain64 "$KEY32" 8 "2 sector_size:4096 iv_large_sectors"
	cross_check aes-cbc-essiv:sha256 "$KEY32" 5 ""
	cross_check aes-xts-plain "$KEY64" 0 "2 allow_discards same_cpu_crypt"
}

# The table line as dm-crypt writes it back, keys hidden by dmsetup, options in its order.
test_table_output() {
	local loop mm
	need_upstream
	loop=$(make_loop 9)
	mm=$(majmin "$loop")
	dmsetup create rs_tab --table "0 16384 crypt aes-xts-plain64 $KEY64 16 $loop 8 4 IV_LARGE_SECTORS sector_size:4096 no_read_workqueue allow_discards"
	[ "$(dmsetup table rs_tab)" = "0 16384 crypt aes-xts-plain64 $(zeroes 128) 16 $mm 8 4 allow_discards no_read_workqueue sector_size:4096 iv_large_sectors" ] ||
		fail "table: '$(dmsetup table rs_tab)'"
	[ "$(table_key --showkeys rs_tab)" = "$KEY64" ] || fail "--showkeys"
	[ "$(blockdev --getss /dev/mapper/rs_tab)" = 4096 ] || fail "logical block size: $(blockdev --getss /dev/mapper/rs_tab)"
	[ "$(cat /sys/block/$(basename "$(readlink -f /dev/mapper/rs_tab)")/queue/discard_max_bytes)" -gt 0 ] ||
		fail "allow_discards: no discards advertised"
}

test_bad_tables() {
	local loop
	need_upstream
	loop=$(make_loop 8)
	expect_table_refused rs_bad "Error decoding and setting key" "0 16384 crypt aes-xts-plain64 ${KEY64:0:32} 0 $loop 0"
	expect_table_refused rs_bad "Error allocating crypto tfm" "0 16384 crypt nosuchcipher-xts-plain64 $KEY64 0 $loop 0"
	expect_table_refused rs_bad "Invalid feature arguments" "0 16384 crypt aes-xts-plain64 $KEY64 0 $loop 0 1 no_such_option"
	expect_table_refused rs_bad "Invalid IV mode" "0 16384 crypt aes-xts-nosuchiv $KEY64 0 $loop 0"
	expect_table_refused rs_bad "Error decoding and setting key" "0 16384 crypt aes-xts-plain64 :64:logon:rs-selftest-missing 0 $loop 0"
	expect_table_refused rs_bad "Invalid feature value for sector_size" "0 16384 crypt aes-xts-plain64 $KEY64 0 $loop 0 1 sector_size:1000"
	if [ "$DM_RUST_IMPL" = rust ]; then
		# dm-crypt has these; crypt-rs refuses them by name.
		expect_table_refused rs_bad "IV mode lmk is not supported" "0 16384 crypt aes-cbc-lmk $KEY32 0 $loop 0"
		expect_table_refused rs_bad "(authenticated encryption) is not supported" \
			"0 16384 crypt aes-xts-plain64 $KEY64 0 $loop 0 1 integrity:32:none"
		# A keyring key of a size no memory holds: refused, and no allocation warning in the log
		# (the run's kernel-log gate).
		expect_table_refused rs_bad "Error decoding and setting key" \
			"0 16384 crypt aes-xts-plain64 :2000000000:logon:rs-selftest-missing 0 $loop 0"
	fi
	# And the target still works afterwards.
	dmsetup create rs_ok --table "0 16384 crypt aes-xts-plain64 $KEY64 0 $loop 0"
}

# The random key, :<bytes>:random (ours only; dm-crypt refuses the form).
need_random_key() {
	[ "$DM_RUST_IMPL" = rust ] || skip "the kernel's dm-crypt has no random key option"
	need_upstream
}

# Plaintext that can be looked for on the disk below.
RKEY_MARK='dm-rust random key plaintext marker 0123456789'
pattern() { yes "$RKEY_MARK" | head -c "$1"; }

# Swap on a device with a random key: pages of a tmpfs file squeezed out of a memory cgroup go
# to it and come back intact; the disk below never holds them in clear.
test_random_key_swap() {
	local loop cgroot cg tmpfs want got swapped writes
	need_random_key
	loop=$(make_loop 32)
	dmsetup create rs_rswap --table "0 65536 crypt aes-xts-plain64 :64:random 0 $loop 0"
	cgroot=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	if [ -z "$cgroot" ]; then
		cgroot=$SCRATCH/cgroup
		mkdir "$cgroot"
		mount -t cgroup2 none "$cgroot"
	fi
	cg=$cgroot/rs_rswap
	tmpfs=$SCRATCH/tmpfs
	# Undone in this order, also if the test fails: the file's swapped pages, the swap, the
	# cgroup (the trap runs after the function's locals are gone: their values are in it).
	# shellcheck disable=SC2064
	# Under set -e a failing command in the trap would fail the test: each may fail (done already).
	trap "set +e; rm -f $tmpfs/f; umount $tmpfs 2>/dev/null; swapoff /dev/mapper/rs_rswap 2>/dev/null
		rmdir $cg 2>/dev/null; [ $cgroot != $SCRATCH/cgroup ] || umount $cgroot; true" EXIT
	mkswap /dev/mapper/rs_rswap >/dev/null
	swapon /dev/mapper/rs_rswap
	grep -q "^$(readlink -f /dev/mapper/rs_rswap) " /proc/swaps || fail "not in /proc/swaps"
	grep -qw memory "$cgroot/cgroup.subtree_control" || echo +memory >"$cgroot/cgroup.subtree_control"
	mkdir "$cg"
	echo 8M >"$cg/memory.max"
	mkdir "$tmpfs"
	mount -t tmpfs -o size=32M none "$tmpfs"
	# Written from inside the cgroup: its 16 MiB cannot all stay in 8 MiB.
	(echo "$BASHPID" >"$cg/cgroup.procs" && pattern 16777216 >"$tmpfs/f")
	swapped=$(cat "$cg/memory.swap.current")
	writes=$(disk_stat /dev/mapper/rs_rswap 5)
	echo "swapped out: $swapped bytes; writes completed on the device: $writes"
	[ "$swapped" -ge 4194304 ] || fail "less than 4 MiB swapped out: $swapped"
	want=$(pattern 16777216 | md5sum)
	got=$(md5sum <"$tmpfs/f")
	[ "$got" = "$want" ] || fail "the file read back from swap differs"
	grep -qaF "$RKEY_MARK" "$(losetup -nO BACK-FILE "$loop")" && fail "the disk below holds swapped pages in clear"
	[ "$(table_key --showkeys rs_rswap)" = ":64:random" ] || fail "table: $(dmsetup table --showkeys rs_rswap)"
	rm "$tmpfs/f"
	umount "$tmpfs"
	swapoff /dev/mapper/rs_rswap
	rmdir "$cg"
}

# The table shows :64:random, never the key; the key cannot be set or replaced by a reload;
# key wipe ends the device; sizes the form does not allow are refused with a reason.
test_random_key_table() {
	local loop mm line want data
	need_random_key
	loop=$(make_loop 8)
	mm=$(majmin "$loop")
	line="0 16384 crypt aes-xts-plain64 :64:random 0 $loop 0"
	dmsetup create rs_rtab --table "$line"
	want="0 16384 crypt aes-xts-plain64 :64:random 0 $mm 0"
	[ "$(dmsetup table rs_rtab)" = "$want" ] || fail "table: '$(dmsetup table rs_rtab)'"
	[ "$(dmsetup table --showkeys rs_rtab)" = "$want" ] || fail "--showkeys: '$(dmsetup table --showkeys rs_rtab)'"
	data=$(random_file 65536)
	write_at /dev/mapper/rs_rtab 0 "$data"
	# A reload would put a new key under the data: refused, live or suspended, whatever the
	# live table is.
	expect_reload_refused rs_rtab "$line"
	dmsetup suspend rs_rtab
	expect_reload_refused rs_rtab "$line"
	dmsetup message rs_rtab 0 key set "$KEY64" 2>/dev/null && fail "key set accepted on a random-key device"
	dmesg | tail -n 3 | grep -q "key set refused: the key is random" || fail "no log line for the refused key set"
	dmsetup resume rs_rtab
	read_at /dev/mapper/rs_rtab 0 65536 | cmp -s - "$data" || fail "data differs after the refused reloads"
	dmsetup create rs_rlive --table "0 16384 crypt aes-xts-plain64 $KEY64 0 $loop 0"
	expect_reload_refused rs_rlive "$line"
	# key wipe: for good (no key set can follow), the table still shows no key.
	dmsetup suspend rs_rtab
	dmsetup message rs_rtab 0 key wipe
	[ "$(dmsetup table --showkeys rs_rtab)" = "$want" ] || fail "after key wipe: '$(dmsetup table --showkeys rs_rtab)'"
	dmsetup resume rs_rtab 2>/dev/null && fail "resume accepted after key wipe"
	dmsetup remove rs_rtab
	expect_table_refused rs_rbad "Invalid random key size (1 to 512 bytes)" "0 16384 crypt aes-xts-plain64 :0:random 0 $loop 0"
	expect_table_refused rs_rbad "Invalid random key size (1 to 512 bytes)" "0 16384 crypt aes-xts-plain64 :513:random 0 $loop 0"
	expect_table_refused rs_rbad "Random key size not accepted by the cipher" "0 16384 crypt aes-xts-plain64 :16:random 0 $loop 0"
	expect_table_refused rs_rbad "Invalid random key (the form is :<bytes>:random)" "0 16384 crypt aes-xts-plain64 :64:random:x 0 $loop 0"
}

# expect_reload_refused <device> <table>: dmsetup reload fails with the random key's reason, and
# no inactive table is left.
expect_reload_refused() {
	local mark="dm-rust selftest: reload $1 $RANDOM"
	echo "$mark" >/dev/kmsg
	dmsetup reload "$1" --table "$2" 2>/dev/null && fail "reload of '$2' onto $1 was accepted"
	dmesg | sed -n "/$mark/,\$p" | grep -q "A random key needs a new device: this one has a live table" ||
		fail "no reason logged for the refused reload: $(dmesg | tail -n 2)"
	dmsetup info "$1" | grep -q INACTIVE && fail "$1 has an inactive table"
	return 0
}

# Two devices made from one table line have different keys; after dmsetup remove --deferred the
# device goes at its last close (new opens until then are still allowed: device-mapper's rule),
# and a new device with the same line cannot read what is still on the disk.
test_random_key_throwaway() {
	local loop line plain c1 c2 c3
	need_random_key
	loop=$(make_loop 8)
	line="0 16384 crypt aes-xts-plain64 :64:random 0 $loop 0"
	plain=$SCRATCH/plain
	pattern 262144 >"$plain"
	dmsetup create rs_r1 --table "$line"
	dmsetup create rs_r2 --table "$line"
	c1=$SCRATCH/c1 c2=$SCRATCH/c2 c3=$SCRATCH/c3
	write_at /dev/mapper/rs_r1 0 "$plain"
	read_at /dev/mapper/rs_r1 0 262144 | cmp -s - "$plain" || fail "data read back differs"
	read_at "$loop" 0 262144 >"$c1"
	grep -qaF "$RKEY_MARK" "$c1" && fail "the disk below holds the plaintext"
	read_at /dev/mapper/rs_r2 0 262144 | cmp -s - "$plain" && fail "a second device from the same line reads the first's data"
	write_at /dev/mapper/rs_r2 0 "$plain"
	read_at "$loop" 0 262144 >"$c2"
	cmp -s "$c1" "$c2" && fail "two devices from the same line wrote the same ciphertext"
	dmsetup remove rs_r1 rs_r2

	dmsetup create rs_r3 --table "$line"
	write_at /dev/mapper/rs_r3 0 "$plain"
	read_at "$loop" 0 262144 >"$c3"
	exec 3</dev/mapper/rs_r3
	dmsetup remove --deferred rs_r3
	dmsetup info rs_r3 | grep -q "DEFERRED REMOVE" || fail "no deferred removal: $(dmsetup info rs_r3)"
	# What the random key cannot prevent: while open, the device can be opened again and read.
	read_at /dev/mapper/rs_r3 0 262144 | cmp -s - "$plain" || fail "a new open before the last close reads something else"
	exec 3<&-
	wait_for 10 eval '! dmsetup info rs_r3 >/dev/null 2>&1' || fail "rs_r3 still there after its last close"
	dmsetup mknodes
	dmsetup create rs_r4 --table "$line"
	read_at "$loop" 0 262144 | cmp -s - "$c3" || fail "the ciphertext on the disk changed"
	read_at /dev/mapper/rs_r4 0 262144 | cmp -s - "$plain" && fail "a new device with the same line reads the old data"
	read_at /dev/mapper/rs_r4 0 262144 | grep -qaF "$RKEY_MARK" && fail "a new device with the same line reads old plaintext"
	return 0
}

restore_crypt() {
	rm -f "$CRYPT_BLOCK_CONF"
	if [ "$DM_RUST_IMPL" = rust ]; then
		rmmod dm_rust 2>/dev/null || true
	fi
	rmmod dm_crypt 2>/dev/null || true
}

ktap_plan 10
use_upstream_crypt || echo "# setting up the crypt target failed"
run_test plain_open test_plain_open
run_test page_cache_stays_plain test_page_cache_stays_plain
run_test luks2_filesystem test_luks2_filesystem
run_test key_messages test_key_messages
run_test table_output test_table_output
run_test bad_tables test_bad_tables
run_test random_key_swap test_random_key_swap
run_test random_key_table test_random_key_table
run_test random_key_throwaway test_random_key_throwaway
OURS= THEIRS=
use_both || echo "# setting up both crypt targets failed"
run_test same_ciphertext_as_kernel test_same_ciphertext_as_kernel
restore_crypt
ktap_finish
