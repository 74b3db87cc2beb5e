#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Inline-encryption passthrough, on devices that really have the capability: the RAM disks
# ramcrypt0 and ramcrypt1 of the test module dm_rust_test_inline.ko (rust/test_inline/), which
# register a blk-crypto profile (4 keyslots, AES-256-XTS, data units 512 and 4096, 64-bit DUNs),
# encrypt in software what arrives with an encryption context, and count it in their module
# parameters. A counter that moves means the device encrypted; blk-crypto's software fallback,
# which encrypts above a device without the capability, sends the device plain requests.
# - linear-rs (one segment, and two over both disks) passes the capability up (sysfs), a table
#   with a device without it does not;
# - ext4 with fscrypt mounted -o inlinecrypt on those tables: the device encrypted the file
#   (counters), no plaintext below, read back decrypted by the device; on a loop device the
#   fallback does it and the counters stay still;
# - inlinecrypt-rs right on the RAM disk: the device encrypts, and its ciphertext equals that of
#   the fallback (inlinecrypt-rs on a loop device) and of dm-crypt aes-xts-plain64;
# - reloading a linear-rs device that an inline-crypto user sits on, to a device without the
#   capability, is refused by device-mapper.
cd "$(dirname "$0")" && . ./lib.sh

ICRYPT=inlinecrypt-rs
PARAMS=/sys/module/dm_rust_test_inline/parameters
RD0=/dev/ramcrypt0
RD1=/dev/ramcrypt1
# The RAM disks' size in sectors (64 MiB, rust/test_inline/test_inline.rs).
RD_SECTORS=$((64 * 2048))
MARK="dm-rust passthrough plaintext"

counter() {
	cat "$PARAMS/$1"
}

hexkey() {
	od -An -tx1 -N64 /dev/urandom | tr -d ' \n'
}

dm_node() {
	basename "$(readlink -f "/dev/mapper/$1")"
}

# no_plaintext <device> <MiB> [<device> <MiB>]...: the marker text is nowhere in the first <MiB>
# of each device (read with direct I/O).
no_plaintext() {
	while [ $# -ge 2 ]; do
		if dd if="$1" bs=1M count="$2" iflag=direct status=none | grep -qF "$MARK"; then
			fail "plaintext on $1"
		fi
		shift 2
	done
}

# marker_file <MiB>: a file of the marker text; prints its path.
marker_file() {
	local f
	f=$(mktemp "$SCRATCH/plain.XXXXXX")
	yes "$MARK" | head -c "$(($1 * 1048576))" >"$f"
	echo "$f"
}

# crypto_caps <block device name>: its inline encryption capability as sysfs shows it
# ("AES-256-XTS=<data unit sizes> max_dun_bits=<n>"), or "none".
crypto_caps() {
	local q=/sys/block/$1/queue/crypto
	[ -d "$q" ] || { echo none; return 0; }
	echo "AES-256-XTS=$(cat "$q/modes/AES-256-XTS" 2>/dev/null) max_dun_bits=$(cat "$q/max_dun_bits")"
}

# fscrypt_file <device> <MiB> <expect: device|fallback> <raw device> <MiB>...: ext4 (4 KiB
# blocks, no journal: less to write under emulation) with an fscrypt directory on <device>,
# mounted -o inlinecrypt; a file of <MiB> written, synced, dropped from the page cache and read
# back. With "device", the RAM disks' counters must show that they encrypted (and then decrypted)
# every data unit of the file; with "fallback", they must not move. The raw devices below must
# hold no plaintext (in their first <MiB>). Leaves the file's extents in $SCRATCH/extents.
fscrypt_file() {
	local dev=$1 mib=$2 expect=$3 mnt=$SCRATCH/mnt f e0 e1 d0 d1 p0 p1 units
	shift 3
	units=$((mib * 256))
	mkfs.ext4 -q -F -b 4096 -N 64 -O encrypt,^has_journal -E nodiscard "$dev"
	mkdir -p "$mnt"
	mount -o inlinecrypt "$dev" "$mnt"
	grep -q " $mnt ext4 .*inlinecrypt" /proc/mounts || fail "ext4 not mounted with inlinecrypt"
	mkdir "$mnt/secret"
	./fscrypt_policy.py "$mnt/secret" "$(hexkey)" >/dev/null
	f=$(marker_file "$mib")
	e0=$(counter units_encrypted) p0=$(counter keyslots_programmed)
	cp "$f" "$mnt/secret/file"
	sync
	e1=$(counter units_encrypted) p1=$(counter keyslots_programmed)
	echo 3 >/proc/sys/vm/drop_caches
	d0=$(counter units_decrypted)
	cmp -s "$f" "$mnt/secret/file" || fail "the file read back differs"
	d1=$(counter units_decrypted)
	filefrag -e "$mnt/secret/file" >"$SCRATCH/extents"
	umount "$mnt"
	echo "$expect: $mib MiB file: units encrypted +$((e1 - e0)), decrypted +$((d1 - d0)), keyslots programmed +$((p1 - p0))"
	case $expect in
	device)
		[ $((e1 - e0)) -ge "$units" ] ||
			fail "the device encrypted $((e1 - e0)) data units, not the file's $units: another layer encrypted"
		[ $((d1 - d0)) -ge "$units" ] ||
			fail "the device decrypted $((d1 - d0)) data units, not the file's $units"
		[ $((p1 - p0)) -ge 1 ] || fail "no key programmed into a keyslot of the device"
		;;
	fallback)
		[ "$e1" = "$e0" ] && [ "$d1" = "$d0" ] ||
			fail "the RAM disks' counters moved for a file on $dev, which has no inline encryption"
		;;
	esac
	no_plaintext "$@"
}

# The capability as the block layer shows it: on the RAM disks, through linear-rs (one segment
# and two over both disks), and not through a table with a device without it.
test_capability_passes_up() {
	local want="AES-256-XTS=0x1200 max_dun_bits=64" loop d c
	for d in ramcrypt0 ramcrypt1; do
		c=$(crypto_caps $d)
		[ "$c" = "$want" ] || fail "$d: inline encryption $c, not $want (no crypto profile registered?)"
		[ "$(cat /sys/block/$d/queue/crypto/num_keyslots)" = 4 ] || fail "$d: not 4 keyslots"
	done
	dmsetup create rs_one --table "0 $RD_SECTORS $LINEAR $RD0 0"
	printf '0 8192 %s %s 8\n8192 8192 %s %s 0\n' "$LINEAR" "$RD0" "$LINEAR" "$RD1" | dmsetup create rs_two
	for d in rs_one rs_two; do
		c=$(crypto_caps "$(dm_node $d)")
		[ "$c" = "$want" ] || fail "$LINEAR $d: inline encryption $c, not $want: the capability does not pass up"
		echo "$d: $c"
	done
	loop=$(make_loop 4)
	printf '0 8192 %s %s 0\n8192 8192 %s %s 0\n' "$LINEAR" "$RD0" "$LINEAR" "$loop" | dmsetup create rs_mixed
	c=$(crypto_caps "$(dm_node rs_mixed)")
	[ "$c" = none ] || fail "a table with a loop device claims inline encryption: $c"
	echo "rs_mixed (a RAM disk and a loop device): none"
}

# fscrypt -o inlinecrypt on linear-rs over the RAM disk: the device encrypts.
test_fscrypt_on_linear() {
	dmsetup create rs_one --table "0 $((16 * 2048)) $LINEAR $RD0 2048"
	fscrypt_file /dev/mapper/rs_one 2 device "$RD0" 17
}

# The same on two segments, one on each RAM disk (2 MiB of ramcrypt0, 14 of ramcrypt1); the file
# is larger than the first segment, and its extents (filefrag) reach into the second.
test_fscrypt_on_two_segments() {
	local first last
	printf '0 4096 %s %s 0\n4096 %d %s %s 0\n' "$LINEAR" "$RD0" $((14 * 2048)) "$LINEAR" "$RD1" |
		dmsetup create rs_two
	fscrypt_file /dev/mapper/rs_two 4 device "$RD0" 2 "$RD1" 14
	# The file's first and last physical blocks (filefrag -e lines "ext: logical..: physical..: ...").
	first=$(awk -F'[:.]+' '$1 ~ /^ *[0-9]+$/ && (f == "" || $4 + 0 < f) { f = $4 + 0 } END { print f }' "$SCRATCH/extents")
	last=$(awk -F'[:.]+' '$1 ~ /^ *[0-9]+$/ && $5 + 0 > l { l = $5 + 0 } END { print l + 0 }' "$SCRATCH/extents")
	echo "the file's blocks: $first to $last; the second segment starts at block 512"
	[ -n "$first" ] && [ "$first" -lt 512 ] && [ "$last" -ge 512 ] ||
		fail "the file does not span both segments: $(cat "$SCRATCH/extents")"
}

# On a loop device (no inline encryption): blk-crypto's fallback encrypts, the RAM disks see
# nothing.
test_fscrypt_fallback_on_loop() {
	local loop
	loop=$(make_loop 16)
	dmsetup create rs_one --table "0 $((16 * 2048)) $LINEAR $loop 0"
	fscrypt_file /dev/mapper/rs_one 2 fallback "$loop" 16
}

# inlinecrypt-rs right on the RAM disk: the device encrypts every data unit once, and the bytes
# it stores are those blk-crypto's fallback stores (inlinecrypt-rs on a loop device) and dm-crypt's.
test_inlinecrypt_on_device() {
	local ss key loop1 loop2 data zero o e0 e1 d0 d1 opt iv=16 start=64 len=2048 size=262144
	modprobe -a dm-crypt xts 2>/dev/null || true
	data=$(random_file $size)
	zero=$(mktemp "$SCRATCH/zero.XXXXXX")
	head -c $((len * 512)) /dev/zero >"$zero"
	for ss in 512 4096; do
		key=$(hexkey)
		opt=
		[ $ss = 512 ] || opt=" 2 sector_size:$ss iv_large_sectors"
		loop1=$(make_loop 2)
		loop2=$(make_loop 2)
		# The area of the RAM disk starts as zeroes, as the loop devices do.
		write_at "$RD0" $((start * 512)) "$zero"
		dmsetup create rs_hw --table "0 $len $ICRYPT aes-xts-plain64 $key $iv $RD0 $start$opt"
		dmsetup create rs_sw --table "0 $len $ICRYPT aes-xts-plain64 $key $iv $loop1 $start$opt"
		dmsetup create rs_ref --table "0 $len crypt aes-xts-plain64 $key $iv $loop2 $start$opt"
		udevadm settle 2>/dev/null || true
		e0=$(counter units_encrypted)
		for o in 0 $((len * 256 + ss)); do
			write_at /dev/mapper/rs_hw $o "$data"
			write_at /dev/mapper/rs_sw $o "$data"
			write_at /dev/mapper/rs_ref $o "$data"
		done
		e1=$(counter units_encrypted)
		[ $((e1 - e0)) = $((2 * size / ss)) ] ||
			fail "sector_size $ss: the device encrypted $((e1 - e0)) data units, not $((2 * size / ss))"
		o=$(cmp <(read_at "$RD0" $((start * 512)) $((len * 512))) <(read_at "$loop1" $((start * 512)) $((len * 512)))) ||
			fail "sector_size $ss: the device's ciphertext differs from the fallback's: $o"
		o=$(cmp <(read_at "$RD0" $((start * 512)) $((len * 512))) <(read_at "$loop2" $((start * 512)) $((len * 512)))) ||
			fail "sector_size $ss: the device's ciphertext differs from dm-crypt's: $o"
		read_at "$RD0" $((start * 512)) $size | cmp -s - "$data" && fail "sector_size $ss: plaintext on the device"
		# (udev may probe the devices after the writes: at least, not exactly, the units read.)
		udevadm settle 2>/dev/null || true
		d0=$(counter units_decrypted)
		read_at /dev/mapper/rs_hw 0 $size | cmp -s - "$data" || fail "sector_size $ss: read back differs"
		d1=$(counter units_decrypted)
		[ $((d1 - d0)) -ge $((size / ss)) ] ||
			fail "sector_size $ss: the device decrypted $((d1 - d0)) data units, not $((size / ss))"
		echo "sector_size $ss: $((e1 - e0)) units encrypted by the device, ciphertext equals the fallback's and dm-crypt's"
		dmsetup remove rs_hw
		dmsetup remove rs_sw
		dmsetup remove rs_ref
	done
}

# A reload of linear-rs under an inline-crypto user, to a device without the capability, is
# refused by device-mapper (dm-table.c, dm_table_construct_crypto_profile); to another device with
# it, accepted.
test_reload_refused() {
	local loop mark table data e0 e1
	dmsetup create rs_lin --table "0 16384 $LINEAR $RD0 0"
	dmsetup create rs_top --table "0 16384 $ICRYPT aes-xts-plain64 $(hexkey) 0 /dev/mapper/rs_lin 0"
	table=$(dmsetup table rs_lin)
	loop=$(make_loop 8)
	udevadm settle 2>/dev/null || true
	mark="dm-rust selftest: reload $RANDOM"
	echo "$mark" >/dev/kmsg
	if dmsetup reload rs_lin --table "0 16384 $LINEAR $loop 0" 2>"$SCRATCH/err"; then
		fail "a reload to a device without inline encryption was accepted"
	fi
	dmesg | sed -n "/$mark/,\$p" |
		grep -q "Inline encryption capabilities of new DM table were more restrictive than the old table's" ||
		fail "no device-mapper message for the refused reload: $(dmesg | sed -n "/$mark/,\$p" | tail -n 3)"
	echo "refused: $(dmesg | sed -n "/$mark/,\$p" | grep -o 'Inline encryption capabilities.*')"
	dmsetup info rs_lin | grep -q INACTIVE && fail "an inactive table was left"
	[ "$(dmsetup table rs_lin)" = "$table" ] || fail "the table changed: $(dmsetup table rs_lin)"
	# The stack still encrypts on the device.
	data=$(random_file 65536)
	e0=$(counter units_encrypted)
	write_at /dev/mapper/rs_top 0 "$data"
	e1=$(counter units_encrypted)
	[ $((e1 - e0)) = 128 ] || fail "after the refused reload, the device encrypted $((e1 - e0)) units, not 128"
	dmsetup reload rs_lin --table "0 16384 $LINEAR $RD1 0" ||
		fail "a reload to the other RAM disk (same capability) was refused"
	dmsetup clear rs_lin
}

if [ "$DM_RUST_IMPL" != rust ]; then
	echo "passthrough.sh: tests our targets over the test module's RAM disks: ours only" >&2
	exit 2
fi
load_module
grep -qw '^dm_rust_test_inline' /proc/modules || insmod "$DM_RUST_TEST_INLINE_KO"
udevadm settle 2>/dev/null || true
tests=(capability_passes_up fscrypt_on_linear fscrypt_on_two_segments fscrypt_fallback_on_loop
	inlinecrypt_on_device reload_refused)
ktap_plan ${#tests[@]}
for t in "${tests[@]}"; do
	run_test "$t" "test_$t"
done
rmmod dm_rust_test_inline 2>/dev/null || echo "# dm_rust_test_inline stays loaded (in use)"
ktap_finish
