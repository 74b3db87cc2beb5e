#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make demo`: dm_rust.ko loaded with the upstream target names, then plain
# dmsetup and veritysetup drive its targets.
set -euo pipefail
cd /dm-rust
step() { printf '\n== %s\n' "$*"; }

step "load dm_rust.ko with upstream names (verity is ours, linear-rs beside the kernel's linear)"
modprobe -a dm-mod dm-bufio loop
insmod build/dm_rust.ko upstream_names=1
dmsetup targets

work=/tmp/demo
mkdir -p "$work"
step "linear-rs: 16 MiB of a loop device, from sector 2048"
truncate -s 32M "$work/disk.img"
disk=$(losetup -f --show "$work/disk.img")
dmsetup create demo_linear --table "0 32768 linear-rs $disk 2048"
dmsetup table demo_linear
echo "hello from linear-rs" | dd of=/dev/mapper/demo_linear bs=512 conv=sync,notrunc oflag=direct status=none
back=$(dd if="$disk" bs=512 skip=2048 count=1 status=none | tr -d '\0')
[ "$back" = "hello from linear-rs" ] || { echo "sector 2048 of $disk holds '$back': NOT EXPECTED"; exit 1; }
echo "read back at sector 2048 of $disk: $back"
dmsetup remove demo_linear

step "verity: veritysetup format, open, verify"
head -c $((16 * 1048576)) /dev/urandom >"$work/data.img"
veritysetup format "$work/data.img" "$work/hash.img" | tee "$work/format.txt"
root=$(sed -n 's/^Root hash:[[:space:]]*//p' "$work/format.txt")
data=$(losetup -r -f --show "$work/data.img")
hash=$(losetup -r -f --show "$work/hash.img")
veritysetup open "$data" demo_verity "$hash" "$root"
veritysetup status demo_verity
dmsetup table demo_verity
if cmp /dev/mapper/demo_verity "$work/data.img"; then
	echo "all 16 MiB read back and verified"
else
	echo "the data read through demo_verity differs from the image: NOT EXPECTED"
	exit 1
fi

step "verity: one flipped byte in data block 100"
veritysetup close demo_verity
losetup -d "$data"
printf '\xff' | dd of="$work/data.img" bs=1 seek=$((100 * 4096 + 5)) conv=notrunc status=none
data=$(losetup -r -f --show "$work/data.img")
veritysetup open "$data" demo_verity "$hash" "$root"
if dd if=/dev/mapper/demo_verity bs=4096 skip=100 count=1 iflag=direct of=/dev/null status=none; then
	echo "block 100 was returned: NOT EXPECTED"; exit 1
else
	echo "block 100: read refused (EIO), as it must be"
fi
dd if=/dev/mapper/demo_verity bs=4096 skip=101 count=1 iflag=direct status=none |
	cmp - <(dd if="$work/data.img" bs=4096 skip=101 count=1 status=none) ||
	{ echo "block 101 does not read back: NOT EXPECTED"; exit 1; }
echo "block 101: reads fine"
[ "$(dmsetup status demo_verity | awk '{ print $4 }')" = C ] ||
	{ echo "status does not say corrupted (C): NOT EXPECTED"; exit 1; }
dmsetup status demo_verity
dmesg | grep 'is corrupted' | tail -n 1
veritysetup close demo_verity
losetup -d "$data" "$hash" "$disk"
step "done"
