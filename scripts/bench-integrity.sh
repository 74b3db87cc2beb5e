#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make bench`, third part (not a test): integrity-rs against the kernel's
# dm-integrity, in the same guest, on the same RAM-backed loop device, in modes J (journal), D
# (direct) and B (bitmap), with internal_hash crc32c (integritysetup's default: 4-byte tags,
# 512-byte blocks). Sequential 1 MiB and random 4 KiB writes and reads with direct I/O, a fresh
# device for every run, runs alternated, the median of BENCH_RUNS reported with the ratio
# ours/kernel. Every write run ends with an fsync, timed, so that what a target leaves for a flush
# is counted (the kernel's mode J completes a write once it is in its journal's memory and commits
# it later; ours commits each write before completing it).
# How: for each mode the loop device is made anew (all zero) and formatted by integritysetup
# (`format --no-wipe`, with the kernel's target); the table is the one `integritysetup open` makes
# for that mode (`dmsetup table --showkeys`), its length cut to BENCH_SIZE_MB (the loop device is
# larger by the metadata) and, for ours, the target's name replaced. --no-wipe leaves no valid tag,
# which first shows that the check works: a read of the blank device through ours must fail with an
# I/O error (not a verification failure) and count tag mismatches. Then the whole device is written
# once, not timed, through the kernel's target by fio as below: every tag is valid from then on,
# and every block holds a fio header. Both targets compute the same crc32c tags, so each read
# afterwards verifies what the last writer, of either, wrote (runs alternate: ours reads what the
# kernel's wrote, and the other way round).
# Every run checks its data twice: the target fails a block whose tag does not match (EILSEQ, a fio
# error), and fio writes a header and a crc32c into each 4 KiB block (the block's own offset
# included) that every read verifies (fatal); the tag mismatch count must still be 0 after the run.
# A run that fails gets no figure: the bench stops there and fails.
# Mode "aead" (not in the default: BENCH_MODES="J D B aead"), tags for the layer above: no
# internal_hash, 32-byte tags, mode J, the blank device formatted by the kernel's target (a
# one-sector table), the kernel's dm-crypt on top (capi:authenc(hmac(sha256),xts(aes))-plain64,
# integrity:32:aead, one random key) over ours or over the kernel's dm-integrity; sequential tests
# only. dm-crypt checks every tag (a mismatch fails the read), fio every block; before the wipe a
# read of the blank device through ours must fail there too.
# Writes build/bench-integrity.txt (BENCH_OUT: another file). BENCH_MODES and BENCH_TESTS choose a
# part (default: J D B; seqwrite seqread randwrite randread); BENCH_SIZE_MB (32), BENCH_RUNS (3)
# and BENCH_RAND_SECONDS (3, the length of a random run) the amount of work.
set -euo pipefail
cd /dm-rust
RUNS=${BENCH_RUNS:-3}
SIZE_MB=${BENCH_SIZE_MB:-32}
RAND_SECONDS=${BENCH_RAND_SECONDS:-3}
out=${BENCH_OUT:-build/bench-integrity.txt}
modes=${BENCH_MODES:-J D B}
tests=${BENCH_TESTS:-seqwrite seqread randwrite randread}
for v in "$RUNS" "$SIZE_MB" "$RAND_SECONDS"; do
	[[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench-integrity: BENCH_RUNS, BENCH_SIZE_MB, BENCH_RAND_SECONDS: positive integers" >&2; exit 2; }
done
sectors=$((SIZE_MB * 2048))

for m in $modes; do
	case $m in J | D | B | aead) ;; *) echo "bench-integrity: unknown mode $m (J, D, B, aead)" >&2; exit 2 ;; esac
done
for t in $tests; do
	case $t in
	seqwrite | seqread | randwrite | randread) ;;
	*) echo "bench-integrity: unknown test $t (seqwrite, seqread, randwrite, randread)" >&2; exit 2 ;;
	esac
done

modprobe -a dm-mod dm-bufio dm-integrity loop
case " $modes " in *" aead "*) modprobe dm-crypt ;; esac
grep -q '^dm_rust ' /proc/modules || insmod build/dm_rust.ko
targets=$(dmsetup targets)
grep -q '^integrity-rs ' <<<"$targets" ||
	{ echo "bench-integrity: no target integrity-rs (dm_rust loaded with upstream_names=1?)" >&2; exit 1; }
grep -q '^integrity ' <<<"$targets" || { echo "bench-integrity: no target integrity (dm-integrity)" >&2; exit 1; }

work=/tmp/bench-integrity
mkdir -p "$work"
disk=
# The loop device: BENCH_SIZE_MB of data and room for the metadata (tags: 1/128 of the data with
# crc32c, 1/16 with 32-byte tags; the journal: 1/128 of the device; padding).
disk_mb=$((SIZE_MB + SIZE_MB / 8 + 4))
# new_disk: a new loop device, all zero, in place of the last one.
new_disk() {
	[ -z "$disk" ] || losetup -d "$disk"
	rm -f "$work/disk.img"
	truncate -s ${disk_mb}M "$work/disk.img"
	disk=$(losetup -f --show "$work/disk.img")
}
cleanup() {
	local d
	for d in bench_crypt bench_int bench_probe; do
		if dmsetup info "$d" >/dev/null 2>&1; then dmsetup remove --retry "$d" || true; fi
	done
	[ -z "$disk" ] || losetup -d "$disk" || true
	rm -f "$work/disk.img"
}
trap cleanup EXIT

# fio_run <device> <fio args...>: one fio run with direct I/O whose 4 KiB blocks carry a
# verification header; reads verify every block (fatal). Prints the KiB moved and the KiB/s. Fails
# on an error (a tag the target or dm-crypt refuses is one: the read fails), a verification
# failure, a run that moved nothing, or a sequential run that moved other than its --size.
fio_run() {
	local dev=$1 line err kib bw a rw='' size=''
	shift
	for a; do
		case $a in
		--rw=*) rw=${a#--rw=} ;;
		--size=*M) size=${a#--size=} size=$((${size%M} * 1024)) ;;
		esac
	done
	line=$(fio --name=b --filename="$dev" --direct=1 --ioengine=psync --verify=crc32c --verify_fatal=1 \
		--verify_header_seed=0 --verify_interval=4096 --do_verify=0 --verify_state_save=0 \
		--output-format=terse --terse-version=3 "$@" 2>"$work/fio.err") ||
		{ echo "fio failed: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	# Terse fields (version 3): 5 error, 6 KiB read, 7 KiB/s read, 47 KiB written, 48 KiB/s written.
	err=$(cut -d';' -f5 <<<"$line")
	[ "$err" = 0 ] || { echo "fio error $err: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	! grep -qiE 'verify|bad (magic|header)|crc' "$work/fio.err" ||
		{ echo "wrong data: $(head -n 3 "$work/fio.err")" >&2; return 1; }
	case $rw in
	read | randread) kib=$(cut -d';' -f6 <<<"$line") bw=$(cut -d';' -f7 <<<"$line") ;;
	*) kib=$(cut -d';' -f47 <<<"$line") bw=$(cut -d';' -f48 <<<"$line") ;;
	esac
	[[ $kib =~ ^[0-9]+$ && $bw =~ ^[0-9]+$ && $kib -gt 0 ]] || { echo "moved $kib KiB at $bw KiB/s" >&2; return 1; }
	case $rw in
	read | write) [ "$kib" = "$size" ] || { echo "moved $kib KiB of $size" >&2; return 1; } ;;
	esac
	echo "$kib $bw"
}

declare -A table
ctable=
key=$(od -An -tx1 -N96 /dev/urandom | tr -d ' \n')

# up <mode> <ours|kernel>: the device of one run, fresh: bench_int with that target and the mode's
# table; for aead, the kernel's dm-crypt (bench_crypt) on it.
up() {
	local target=integrity
	[ "$2" = kernel ] || target=integrity-rs
	dmsetup create bench_int --table "$(awk -v t="$target" '{ $3 = t; print }' <<<"${table[$1]}")" || return 1
	[ "$1" != aead ] || dmsetup create bench_crypt --table "$ctable" ||
		{ dmsetup remove --retry bench_int; return 1; }
}
down() {
	if dmsetup info bench_crypt >/dev/null 2>&1; then dmsetup remove --retry bench_crypt || return 1; fi
	dmsetup remove --retry bench_int
}
# dev_of <mode>: what fio runs on.
dev_of() { if [ "$1" = aead ]; then echo /dev/mapper/bench_crypt; else echo /dev/mapper/bench_int; fi; }
# mismatches: the tag mismatches bench_int counted since it was created (status: start, length,
# target, mismatches, provided sectors, recalculation position).
mismatches() { dmsetup status bench_int | awk '{ print $4 }'; }

# prepare <mode>: a new loop device formatted for <mode> and its table in table[<mode>]; a read of
# its blank blocks through ours is shown to fail; it is then written whole through the kernel's
# target.
prepare() {
	local mode=$1 t provided name tag m
	local -a fopts=() oopts=()
	new_disk
	if [ "$mode" = aead ]; then
		# A blank device: the kernel's target formats it when a table is first loaded.
		dmsetup create bench_int --table "0 1 integrity $disk 0 32 J 0"
		provided=$(dmsetup status bench_int | awk '{ print $5 }')
		dmsetup remove --retry bench_int
		t="0 $provided integrity $disk 0 32 J 0"
		ctable="0 $sectors crypt capi:authenc(hmac(sha256),xts(aes))-plain64 $key 0 /dev/mapper/bench_int 0 1 integrity:32:aead"
	else
		case $mode in
		D) oopts=(--integrity-no-journal) ;;
		B) fopts=(--integrity-bitmap-mode) oopts=(--integrity-bitmap-mode) ;;
		esac
		integritysetup format --batch-mode -I crc32c --no-wipe "${fopts[@]}" "$disk" >/dev/null
		integritysetup open -I crc32c "${oopts[@]}" "$disk" bench_probe
		t=$(dmsetup table --showkeys bench_probe)
		integritysetup close bench_probe
		read -r _ provided name _ _ tag m _ <<<"$t"
		if ! [ "$name" = integrity ] || ! [ "$tag" = 4 ] || ! [ "$m" = "$mode" ] ||
			! [[ " $t " == *" internal_hash:crc32c "* ]]; then
			echo "bench-integrity: $mode: unexpected table from integritysetup: $t" >&2
			exit 1
		fi
	fi
	if ! [[ $provided =~ ^[0-9]+$ ]] || [ "$provided" -lt "$sectors" ]; then
		echo "bench-integrity: $mode: the device provides '$provided' sectors, fewer than $sectors" >&2
		exit 1
	fi
	table[$mode]=$(awk -v n="$sectors" '{ $2 = n; print }' <<<"$t")
	echo "# $mode: ${table[$mode]}"

	# The check can fail: no tag of the blank device is valid, and a read through ours fails (an I/O
	# error, not wrong data), with mismatches counted (but for aead: dm-crypt checks there).
	up "$mode" ours || { echo "bench-integrity: $mode: integrity-rs refused the table" >&2; exit 1; }
	if fio_run "$(dev_of "$mode")" --rw=read --bs=1M --size=1M >/dev/null 2>"$work/selfcheck.err" ||
		! grep -q 'io_u error' "$work/fio.err" || grep -qiE 'verify|bad (magic|header)' "$work/fio.err" ||
		{ [ "$mode" != aead ] && [ "$(mismatches)" = 0 ]; }; then
		echo "bench-integrity: $mode: a read of never-written blocks through integrity-rs was not refused as it" \
			"should be: the check does not work ($(head -n 1 "$work/fio.err"); mismatches: $(mismatches))" >&2
		down
		exit 1
	fi
	echo "# $mode: a read of never-written blocks through integrity-rs fails: $(head -n 1 "$work/fio.err")"
	down

	# Every tag made valid, every block given a fio header, by the kernel's target.
	up "$mode" kernel || { echo "bench-integrity: $mode: the kernel's target refused the table" >&2; exit 1; }
	fio_run "$(dev_of "$mode")" --rw=write --bs=1M --size="${SIZE_MB}M" --end_fsync=1 >/dev/null ||
		{ down; echo "bench-integrity: $mode: writing the device through the kernel's target failed" >&2; exit 1; }
	down
}

# mbps <mode> <ours|kernel> <test>: MB/s of one verified run of <test> on a fresh device.
mbps() {
	local mode=$1 impl=$2 test=$3 r n
	local -a args
	case $test in
	seqwrite) args=(--rw=write --bs=1M "--size=${SIZE_MB}M" --end_fsync=1) ;;
	seqread) args=(--rw=read --bs=1M "--size=${SIZE_MB}M") ;;
	randwrite) args=(--rw=randwrite --bs=4k "--size=${SIZE_MB}M" --time_based "--runtime=$RAND_SECONDS" --randrepeat=1 --end_fsync=1) ;;
	randread) args=(--rw=randread --bs=4k "--size=${SIZE_MB}M" --time_based "--runtime=$RAND_SECONDS" --randrepeat=1) ;;
	esac
	up "$mode" "$impl" || { echo "bench-integrity: $mode $impl: the device was not created" >&2; return 1; }
	if ! r=$(fio_run "$(dev_of "$mode")" "${args[@]}") || ! n=$(mismatches) || [ "$n" != 0 ]; then
		down
		echo "bench-integrity: $mode $impl $test: the run failed or returned wrong data" \
			"(mismatches: ${n:-?}); no figure" >&2
		return 1
	fi
	down || { echo "bench-integrity: $mode $impl: the device could not be removed" >&2; return 1; }
	awk -v kib="${r#* }" 'BEGIN { printf "%.2f", kib * 1024 / 1e6 }'
}

median() { tr ' ' '\n' | sort -g | awk 'NF { v[++n] = $1 } END { print v[int((n + 1) / 2)] }'; }

declare -A res
for mode in $modes; do
	prepare "$mode"
	for test in $tests; do
		# Tags for the layer above: dm-crypt's work dominates; sequential tests only.
		[ "$mode" != aead ] || [[ $test == seq* ]] || continue
		ours="" kern=""
		for _ in $(seq "$RUNS"); do
			v=$(mbps "$mode" ours "$test") || exit 1
			ours+=" $v"
			v=$(mbps "$mode" kernel "$test") || exit 1
			kern+=" $v"
		done
		res[$mode.$test.ours]=$(median <<<"$ours")
		res[$mode.$test.kernel]=$(median <<<"$kern")
		echo "# $mode $test runs: integrity-rs$ours / dm-integrity$kern"
	done
done

{
	echo "integrity throughput, $SIZE_MB MiB on a RAM-backed loop device, direct I/O, fresh device each run,"
	echo "512-byte blocks; J, D, B: internal_hash crc32c (4-byte tags), integritysetup's tables; writes"
	echo "end with an fsync (timed); every block read checked; median of $RUNS alternated runs;"
	case " $modes " in *" aead "*)
		echo "aead: no internal hash, 32-byte tags from the kernel's dm-crypt on top"
		echo "(capi:authenc(hmac(sha256),xts(aes))-plain64, integrity:32:aead), mode J;" ;;
	esac
	echo "$(nproc) vCPUs, kernel $(uname -r)"
	printf '%-5s %-10s %14s %14s %7s\n' mode test integrity-rs dm-integrity ratio
	for mode in $modes; do
		for test in $tests; do
			a=${res[$mode.$test.ours]:-} k=${res[$mode.$test.kernel]:-}
			[ -n "$a" ] || continue
			printf '%-5s %-10s %9s MB/s %9s MB/s %7s\n' "$mode" "$test" "$a" "$k" \
				"$(awk -v a="$a" -v b="$k" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
		done
	done
} | tee "$out"
echo "# bench-integrity: $SECONDS s"
