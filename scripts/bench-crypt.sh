#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make bench`, second part (not a test): crypt-rs and inlinecrypt-rs (blk-crypto's
# software fallback: the guest has no inline-encryption hardware) against the kernel's dm-crypt, in
# the same guest, on the same RAM-backed loop device, all three with the same key and the same
# settings (aes-xts-plain64, 4096-byte sectors, iv_large_sectors: the ciphertext is the same on
# disk). Sequential 1 MiB and random 4 KiB writes and reads with direct I/O, a fresh device for
# every run, runs alternated, the median of BENCH_RUNS reported; plus the cipher's own speed in
# this guest from the kernel's crypto API (cryptsetup benchmark, through AF_ALG): the ceiling.
# Every run checks its data: fio writes a header and a crc32c into each 4 KiB block (the block's
# own offset included) and every read verifies them (fatal). The three share one on-disk format, so
# each read verifies what the last writer (of any of them) wrote; before measuring, what crypt-rs
# wrote is read back through the kernel's dm-crypt, and the check is shown to fail with another
# key. Writes build/bench-crypt.txt (BENCH_OUT: another file).
# BENCH_TARGETS and BENCH_TESTS choose a part (default: all three targets; seqwrite seqread
# randwrite randread). Also available: seqwrite-qd4 and seqread-qd4, sequential 1 MiB with four
# I/Os in flight (libaio, iodepth 4), where the work of several bios can run on several CPUs.
set -euo pipefail
cd /dm-rust
RUNS=${BENCH_RUNS:-3}
SIZE_MB=${BENCH_SIZE_MB:-128}
RAND_SECONDS=${BENCH_RAND_SECONDS:-10}
out=${BENCH_OUT:-build/bench-crypt.txt}

modprobe -a dm-mod dm-bufio dm-crypt loop
modprobe algif_skcipher 2>/dev/null || true
grep -q '^dm_rust ' /proc/modules || insmod build/dm_rust.ko
work=/tmp/bench-crypt
mkdir -p "$work"
truncate -s ${SIZE_MB}M "$work/disk.img"
disk=$(losetup -f --show "$work/disk.img")
sectors=$((SIZE_MB * 2048))
key=$(od -An -tx1 -N64 /dev/urandom | tr -d ' \n')
badkey=$(od -An -tx1 -N64 /dev/urandom | tr -d ' \n')
table() { echo "0 $sectors $1 aes-xts-plain64 ${2:-$key} 0 $disk 0 2 sector_size:4096 iv_large_sectors"; }

# fio_run <device> <fio args...>: one fio run with direct I/O whose 4 KiB blocks carry a verification
# header; reads verify every block (fatal). Prints fio's terse line; fails on an error, a
# verification failure, or a sequential run that moved fewer bytes than asked.
fio_run() {
	local dev=$1 line err kib size
	shift
	line=$(fio --name=b --filename="$dev" --direct=1 --ioengine=psync --verify=crc32c --verify_fatal=1 \
		--verify_header_seed=0 --verify_interval=4096 --do_verify=0 --verify_state_save=0 --output-format=terse \
		--terse-version=3 "$@" 2>"$work/fio.err") || { echo "fio failed: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	# Terse fields (version 3): 5 error, 6 KiB read, 7 KiB/s read, 47 KiB written, 48 KiB/s written.
	err=$(cut -d';' -f5 <<<"$line")
	[ "$err" = 0 ] || { echo "fio error $err: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	! grep -qiE 'verify|bad (magic|header)|crc' "$work/fio.err" ||
		{ echo "wrong data: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	case " $* " in
	*" --rw=read "*) kib=$(cut -d';' -f6 <<<"$line") ;;
	*" --rw=write "*) kib=$(cut -d';' -f47 <<<"$line") ;;
	*) kib=$((SIZE_MB * 1024)) ;;
	esac
	[ "$kib" = $((SIZE_MB * 1024)) ] || { echo "moved $kib KiB of $((SIZE_MB * 1024))" >&2; return 1; }
	echo "$line"
}

# mbps <target> <test>: MB/s of one verified run of <test> on a fresh device of <target>.
mbps() {
	local target=$1 test=$2 line field=7
	local -a args
	case $test in
	seqwrite) args=(--rw=write --bs=1M --size=${SIZE_MB}M) field=48 ;;
	seqread) args=(--rw=read --bs=1M --size=${SIZE_MB}M) ;;
	seqwrite-qd4) args=(--rw=write --bs=1M --size=${SIZE_MB}M --ioengine=libaio --iodepth=4) field=48 ;;
	seqread-qd4) args=(--rw=read --bs=1M --size=${SIZE_MB}M --ioengine=libaio --iodepth=4) ;;
	randwrite) args=(--rw=randwrite --bs=4k --size=${SIZE_MB}M --time_based --runtime=$RAND_SECONDS --randrepeat=1) field=48 ;;
	randread) args=(--rw=randread --bs=4k --size=${SIZE_MB}M --time_based --runtime=$RAND_SECONDS --randrepeat=1) ;;
	esac
	dmsetup create bench_dev --table "$(table "$target")"
	line=$(fio_run /dev/mapper/bench_dev "${args[@]}") || {
		dmsetup remove bench_dev
		echo "bench: $target $test: the run failed or returned wrong data; no figure" >&2
		return 1
	}
	dmsetup remove bench_dev
	awk -v kib="$(cut -d';' -f"$field" <<<"$line")" 'BEGIN { printf "%.1f", kib * 1024 / 1e6 }'
}

# The check can fail, and the targets share one on-disk format: what crypt-rs wrote reads back
# through dm-crypt with the same key, and not with another key.
dmsetup create bench_dev --table "$(table crypt-rs)"
fio_run /dev/mapper/bench_dev --rw=write --bs=1M --size=${SIZE_MB}M >/dev/null
dmsetup remove bench_dev
dmsetup create bench_dev --table "$(table crypt)"
fio_run /dev/mapper/bench_dev --rw=read --bs=1M --size=${SIZE_MB}M >/dev/null ||
	{ dmsetup remove bench_dev; echo "bench: dm-crypt does not read what crypt-rs wrote" >&2; exit 1; }
dmsetup remove bench_dev
dmsetup create bench_dev --table "$(table crypt "$badkey")"
if fio_run /dev/mapper/bench_dev --rw=read --bs=1M --size=1M >/dev/null 2>"$work/selfcheck.err" ||
	! grep -q 'verify' "$work/selfcheck.err"; then
	dmsetup remove bench_dev
	echo "bench: a read with the wrong key was not refused by the verification: the check does not work" >&2
	exit 1
fi
dmsetup remove bench_dev
echo "# verification works: dm-crypt reads what crypt-rs wrote; with another key the check fails"

median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A res
targets=${BENCH_TARGETS:-crypt-rs inlinecrypt-rs crypt}
tests=${BENCH_TESTS:-seqwrite seqread randwrite randread}
for test in $tests; do
	declare -A runs=()
	for _ in $(seq "$RUNS"); do
		for t in $targets; do
			runs[$t]+=" $(mbps "$t" "$test")" || exit 1
		done
	done
	for t in $targets; do
		res[$t.$test]=$(echo ${runs[$t]} | median)
		echo "# $t $test runs:${runs[$t]}"
	done
	unset runs
done

# The ceiling: the kernel's aes-xts through the crypto API, 512-bit key, 4096-byte blocks.
ceiling=$(cryptsetup benchmark -c aes-xts-plain64 -s 512 2>/dev/null | awk '/aes-xts/ { print $(NF-3), $(NF-1) }' || true)
losetup -d "$disk"
rm -f "$work/disk.img"

{
	echo "crypt throughput, $SIZE_MB MiB RAM-backed loop device, direct I/O, fresh device each run,"
	echo "aes-xts-plain64 with a 512-bit key, 4096-byte sectors, iv_large_sectors; every block read"
	echo "checked; median of $RUNS alternated runs; $(nproc) vCPUs, kernel $(uname -r)"
	printf '%-24s %14s %14s %14s %10s %10s\n' test crypt-rs inlinecrypt-rs dm-crypt crypt-rs/ inline/
	ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo -; }
	for test in $tests; do
		a=${res[crypt-rs.$test]:-} i=${res[inlinecrypt-rs.$test]:-} k=${res[crypt.$test]:-}
		printf '%-24s %9s MB/s %9s MB/s %9s MB/s %10s %10s\n' "$test" "${a:--}" "${i:--}" "${k:--}" \
			"$(ratio "$a" "$k")" "$(ratio "$i" "$k")"
	done
	if [ -n "$ceiling" ]; then
		read -r enc dec <<<"$ceiling"
		echo "cipher alone (cryptsetup benchmark, kernel crypto API): encryption $enc MiB/s, decryption $dec MiB/s"
	else
		echo "cipher alone: cryptsetup benchmark gave no figure (no AF_ALG in this guest?)"
	fi
} | tee "$out"
