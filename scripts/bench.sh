#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make bench` (not a test): one verity image, read through our verity-rs and
# through the kernel's dm-verity in the same guest, with direct I/O and a fresh device (cold
# hash cache) for every run; and the same reads through linear-rs and the kernel's linear.
# Prints MB/s for each and the ratio ours/kernel; also writes build/bench.txt. Runs are
# alternated and the median of BENCH_RUNS is reported.
# Every run checks what it read: the image is written by fio with a header and a crc32c in each
# 4 KiB block (the block's own offset included), and every read is verified against them
# (--verify=crc32c, fatal). A run that returned wrong data, or fewer bytes than asked, gets no
# figure: the bench stops there and fails. Before measuring, the check is shown to work: a read
# through a mapping shifted by one block must fail it.
set -euo pipefail
cd /dm-rust
RUNS=${BENCH_RUNS:-3}
SIZE_MB=${BENCH_SIZE_MB:-128}
RAND_SECONDS=${BENCH_RAND_SECONDS:-10}
out=build/bench.txt

modprobe -a dm-mod dm-bufio dm-verity loop
grep -q '^dm_rust ' /proc/modules || insmod build/dm_rust.ko
work=/tmp/bench
mkdir -p "$work"
# Random payload, with a verification header (offset, crc32c) in each 4 KiB block.
fio --name=image --filename="$work/data.img" --size=${SIZE_MB}M --rw=write --bs=4k --verify=crc32c \
	--do_verify=0 --output-format=terse >/dev/null
[ "$(stat -c %s "$work/data.img")" = $((SIZE_MB * 1048576)) ] || { echo "bench: fio made no image" >&2; exit 1; }
root=$(veritysetup format "$work/data.img" "$work/hash.img" | sed -n 's/^Root hash:[[:space:]]*//p')
data=$(losetup -r -f --show "$work/data.img")
hash=$(losetup -r -f --show "$work/hash.img")
# The kernel's table for this image; ours takes the very same line.
veritysetup open "$data" bench_probe "$hash" "$root"
table=$(dmsetup table bench_probe)
veritysetup close bench_probe

# verified_read <device> <fio args...>: one fio read run that verifies every 4 KiB block it reads
# against its header and crc32c; prints fio's terse line; fails if fio reports an error, a
# verification failure, or read fewer bytes than asked for a sequential run.
verified_read() {
	local dev=$1 line err kib
	shift
	line=$(fio --name=b --filename="$dev" --direct=1 --ioengine=psync --verify=crc32c --verify_fatal=1 \
		--verify_header_seed=0 --verify_interval=4096 --output-format=terse --terse-version=3 "$@" \
		2>"$work/fio.err") || { echo "fio failed: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	# Terse fields: 5 error, 6 KiB read, 7 KiB/s.
	err=$(cut -d';' -f5 <<<"$line")
	kib=$(cut -d';' -f6 <<<"$line")
	[ "$err" = 0 ] || { echo "fio error $err: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	! grep -qiE 'verify|bad (magic|header)|crc' "$work/fio.err" ||
		{ echo "wrong data: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	# A sequential read must move the whole --size (in MiB).
	local a size=
	for a; do
		case $a in --size=*M) size=${a#--size=} size=${size%M} ;; esac
	done
	case " $* " in *" --rw=read "*)
		[ -n "$size" ] && [ "$kib" = $((size * 1024)) ] || { echo "read $kib KiB of ${size:-?} MiB" >&2; return 1; } ;;
	esac
	echo "$line"
}

# mbps <target> <fio args...>: bandwidth in MB/s of one verified fio run on a fresh device.
mbps() {
	local target=$1 line t
	shift
	case $target in
	linear*) t="0 $((SIZE_MB * 2048)) $target $data 0" ;;
	*) t=${table/ verity / $target } ;;
	esac
	dmsetup create --readonly bench_dev --table "$t"
	line=$(verified_read /dev/mapper/bench_dev "$@") || {
		dmsetup remove bench_dev
		echo "bench: $target $*: the run returned wrong data; no figure" >&2
		return 1
	}
	dmsetup remove bench_dev
	# fio's terse read bandwidth is in KiB/s.
	awk -v kib="$(cut -d';' -f7 <<<"$line")" 'BEGIN { printf "%.1f", kib * 1024 / 1e6 }'
}

# The check can fail: a mapping one block off returns wrong data, and must be refused.
dmsetup create --readonly bench_dev --table "0 2048 linear-rs $data 8"
if verified_read /dev/mapper/bench_dev --rw=read --bs=1M --size=1M >/dev/null 2>"$work/selfcheck.err" ||
	! grep -q 'verify' "$work/selfcheck.err"; then
	dmsetup remove bench_dev
	echo "bench: a read one block off was not refused by the verification: the check does not work" >&2
	cat "$work/selfcheck.err" >&2
	exit 1
fi
dmsetup remove bench_dev
echo "# verification works: a mapping one block off was refused ($(head -n 1 "$work/selfcheck.err"))"

median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A res
for pair in "verity-rs verity" "linear-rs linear"; do
	read -r mine theirs <<<"$pair"
	for test in seq rand; do
		case $test in
		seq) args=(--rw=read --bs=1M --size=${SIZE_MB}M) ;;
		rand) args=(--rw=randread --bs=4k --size=${SIZE_MB}M --time_based --runtime=$RAND_SECONDS --randrepeat=1) ;;
		esac
		ours="" kern=""
		for _ in $(seq "$RUNS"); do
			ours+=" $(mbps "$mine" "${args[@]}")" || exit 1
			kern+=" $(mbps "$theirs" "${args[@]}")" || exit 1
		done
		res[$mine.$test.ours]=$(echo $ours | median)
		res[$mine.$test.kernel]=$(echo $kern | median)
		echo "# $mine $test runs: ours$ours / kernel$kern"
	done
done

{
	echo "read throughput, $SIZE_MB MiB image on a RAM-backed loop device, direct I/O, fresh device each run"
	echo "(verity: sha256, 4 KiB blocks, cold hash cache); every block read checked against the image;"
	echo "median of $RUNS alternated runs,"
	echo "$(nproc) vCPUs, kernel $(uname -r)"
	printf '%-10s %-24s %12s %12s %6s\n' target test ours kernel ratio
	for mine in verity-rs linear-rs; do
		for test in seq rand; do
			name=$([ $test = seq ] && echo "sequential 1 MiB reads" || echo "random 4 KiB reads")
			a=${res[$mine.$test.ours]} b=${res[$mine.$test.kernel]}
			printf '%-10s %-24s %7s MB/s %7s MB/s %6s\n' "$mine" "$name" "$a" "$b" \
				"$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')"
		done
	done
} | tee "$out"
losetup -d "$data" "$hash"
