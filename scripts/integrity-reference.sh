#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Makes the reference records of the dm-integrity host tests (tests/integrity_guest.rs) with the
# kernel's own dm-integrity: for each case, integritysetup formats a file on a loop device and
# opens it, and the record keeps the first 4 KiB of the device (the superblock), the size, the
# journal size asked for, and the kernel's `dmsetup table` and `dmsetup status` lines.
#
# Runs in the guest, as root, with the kernel's dm-integrity (not dm_rust):
#   scripts/vm.sh scripts/integrity-reference.sh
# Writes tests/data/integrity/<case>.sb and <case>.txt; commit them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/data/integrity
mkdir -p "$out"
modprobe loop
modprobe dm-integrity
work=$(mktemp -d)
trap 'integritysetup close ref-int 2>/dev/null || true; losetup -D; rm -rf "$work"' EXIT

# Fixed keys: the records must not depend on randomness beyond the fix_hmac salt.
head -c 32 /dev/zero | tr '\0' '\252' >"$work/key"
head -c 32 /dev/zero | tr '\0' '\125' >"$work/jkey"

# case <name> <device sectors> <meta sectors or 0> <journal sectors asked, 0 for default>
#      <format options> -- <open options>
case_() {
	local name=$1 sectors=$2 meta=$3 journal=$4
	shift 4
	local fmt=() opn=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do fmt+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	opn=("$@")
	rm -f "$work/data" "$work/meta"
	truncate -s $((sectors * 512)) "$work/data"
	local dev meta_dev= extra=()
	dev=$(losetup -f --show "$work/data")
	local sbdev=$dev
	if [ "$meta" != 0 ]; then
		truncate -s $((meta * 512)) "$work/meta"
		meta_dev=$(losetup -f --show "$work/meta")
		extra=(--data-device "$dev")
		sbdev=$meta_dev
	fi
	integritysetup format --batch-mode "${fmt[@]}" "${extra[@]}" "$sbdev"
	dd if="$sbdev" of="$out/$name.sb" bs=4096 count=1 status=none
	integritysetup open "${opn[@]}" "${extra[@]}" "$sbdev" ref-int
	{
		echo "device_sectors $sectors"
		echo "meta_sectors $meta"
		echo "journal_request $journal"
		echo "format ${fmt[*]}"
		echo "open ${opn[*]}"
		echo "table $(dmsetup table --showkeys ref-int)"
		echo "status $(dmsetup status ref-int)"
		integritysetup dump "$sbdev" | sed 's/^/dump /'
	} >"$out/$name.txt"
	integritysetup close ref-int
	losetup -d "$dev"
	[ -z "$meta_dev" ] || losetup -d "$meta_dev"
	echo "integrity-reference: $name"
}

K=(--integrity-key-file "$work/key" --integrity-key-size 32)
J=(--journal-integrity hmac-sha256 --journal-integrity-key-file "$work/jkey" --journal-integrity-key-size 32)
case_ crc32c 65536 0 0 -I crc32c -- -I crc32c
case_ crc32c-legacy 65536 0 0 -I crc32c --integrity-legacy-padding -- -I crc32c
case_ sha256-4k 65536 0 0 -I sha256 --sector-size 4096 -- -I sha256
case_ sha1-tag16 65536 0 0 -I sha1 --tag-size 16 -- -I sha1
case_ interleave 65536 0 2048 -I crc32c --interleave-sectors 1024 --journal-size 1048576 -- -I crc32c
case_ odd-size 20011 0 0 -I crc32c -- -I crc32c
case_ direct 65536 0 0 -I sha256 -- -I sha256 --integrity-no-journal
case_ bitmap 65536 0 0 -I sha256 -B -- -I sha256 -B --bitmap-sectors-per-bit 65536 --bitmap-flush-time 5001
case_ recalculate 65536 0 0 -I crc32c --no-wipe -- -I crc32c --integrity-recalculate
case_ hmac 65536 0 0 -I hmac-sha256 "${K[@]}" -- -I hmac-sha256 "${K[@]}"
case_ journal-mac 65536 0 0 -I crc32c "${J[@]}" -- -I crc32c "${J[@]}" --journal-watermark 66 --journal-commit-time 1234
case_ meta-device 65536 8192 0 -I crc32c -- -I crc32c
case_ recovery 65536 0 0 -I crc32c -- -I crc32c --integrity-recovery-mode
