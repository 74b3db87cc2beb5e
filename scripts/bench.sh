#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make bench` (not a test): one verity image, read through our verity-rs and
# through the kernel's dm-verity in the same guest, with direct I/O and a fresh device (cold
# hash cache) for every run; and the same reads through linear-rs and the kernel's linear.
# Prints MB/s for each and the ratio ours/kernel; also writes build/bench.txt. Runs are
# alternated and the median of BENCH_RUNS is reported.
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
head -c $((SIZE_MB * 1048576)) /dev/urandom >"$work/data.img"
root=$(veritysetup format "$work/data.img" "$work/hash.img" | sed -n 's/^Root hash:[[:space:]]*//p')
data=$(losetup -r -f --show "$work/data.img")
hash=$(losetup -r -f --show "$work/hash.img")
# The kernel's table for this image; ours takes the very same line.
veritysetup open "$data" bench_probe "$hash" "$root"
table=$(dmsetup table bench_probe)
veritysetup close bench_probe

# mbps <target> <fio args...>: bandwidth in MB/s of one fio run on a fresh device.
mbps() {
	local target=$1 bw t
	shift
	case $target in
	linear*) t="0 $((SIZE_MB * 2048)) $target $data 0" ;;
	*) t=${table/ verity / $target } ;;
	esac
	dmsetup create --readonly bench_dev --table "$t"
	bw=$(fio --name=b --filename=/dev/mapper/bench_dev --direct=1 --ioengine=psync \
		--output-format=terse --terse-version=3 "$@" | cut -d';' -f7)
	dmsetup remove bench_dev
	# fio's terse read bandwidth is in KiB/s.
	awk -v kib="$bw" 'BEGIN { printf "%.1f", kib * 1024 / 1e6 }'
}

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
			ours+=" $(mbps "$mine" "${args[@]}")"
			kern+=" $(mbps "$theirs" "${args[@]}")"
		done
		res[$mine.$test.ours]=$(echo $ours | median)
		res[$mine.$test.kernel]=$(echo $kern | median)
		echo "# $mine $test runs: ours$ours / kernel$kern"
	done
done

{
	echo "read throughput, $SIZE_MB MiB image on a RAM-backed loop device, direct I/O, fresh device each run"
	echo "(verity: sha256, 4 KiB blocks, cold hash cache); median of $RUNS alternated runs,"
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
