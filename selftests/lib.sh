# SPDX-License-Identifier: GPL-2.0
# Shared helpers of the dm-rust selftests: KTAP output, scratch loop devices, assertions.
# A test is a shell function run in a subshell with `set -eu`; it fails by exiting non-zero
# (use `fail`), skips by exiting 4 (use `skip`, only for something the guest lacks).

KSFT_SKIP=4
SCRATCH=${SCRATCH:-/tmp/dm-rust-selftests}
case $(uname -r) in *-dmrust-debug) DM_RUST_KO=${DM_RUST_KO:-/dm-rust/build/debug/dm_rust.ko} ;; esac
DM_RUST_KO=${DM_RUST_KO:-/dm-rust/build/dm_rust.ko}
mkdir -p "$SCRATCH"

_ktap_n=0
_ktap_planned=0

ktap_plan() {
	echo "TAP version 13"
	echo "1..$1"
	_ktap_planned=$1
}

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit $KSFT_SKIP; }

# run_test <name> <function> [args...]
run_test() {
	local name=$1 rc out
	shift
	_ktap_n=$((_ktap_n + 1))
	out=$SCRATCH/test.out
	(set -eu; "$@") >"$out" 2>&1
	rc=$?
	cleanup_devices
	sed 's/^/# /' "$out"
	case $rc in
	0) echo "ok $_ktap_n $name" ;;
	"$KSFT_SKIP") echo "ok $_ktap_n $name # SKIP $(sed -n 's/^SKIP: //p' "$out" | tail -n 1)" ;;
	*) echo "not ok $_ktap_n $name" ;;
	esac
}

ktap_finish() {
	[ "$_ktap_n" -eq "$_ktap_planned" ] && return 0
	echo "# planned $_ktap_planned tests, ran $_ktap_n"
	return 1
}

# Loads dm_rust.ko (after dm-mod) unless it is loaded; extra arguments are module parameters.
load_module() {
	# insmod loads no dependencies: device-mapper core and dm-bufio first.
	modprobe -a dm-mod dm-bufio
	grep -qw '^dm_rust' /proc/modules && return 0
	insmod "$DM_RUST_KO" "$@"
}

unload_module() {
	grep -qw '^dm_rust' /proc/modules || return 0
	rmmod dm_rust
}

# make_loop <MiB>: a zero-filled loop device backed by a file in $SCRATCH; prints its path.
make_loop() {
	local f
	modprobe loop 2>/dev/null || true
	f=$(mktemp "$SCRATCH/loop.XXXXXX")
	truncate -s "$1M" "$f"
	losetup -f --show "$f"
}

# Removes the devices the tests made (all named rs_*) and detaches the scratch loop devices.
cleanup_devices() {
	local d
	for d in $(dmsetup ls 2>/dev/null | awk '$1 ~ /^rs_/ {print $1}' | sort -r); do
		dmsetup remove --retry "$d" >/dev/null 2>&1 || dmsetup remove --force "$d" >/dev/null 2>&1 || true
	done
	losetup -a 2>/dev/null | grep "$SCRATCH" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null || true
	rm -f "$SCRATCH"/loop.* 2>/dev/null || true
}

# Bytes of a device or file: read_at <dev> <byte offset> <count>, to stdout.
read_at() {
	dd if="$1" bs=512 skip=$(($2 / 512)) count=$(($3 / 512)) iflag=direct status=none
}

# write_at <dev> <byte offset> <file>
write_at() {
	dd if="$3" of="$1" bs=512 seek=$(($2 / 512)) oflag=direct conv=notrunc status=none
}

# random_file <bytes>: a file of random bytes; prints its path.
random_file() {
	local f
	f=$(mktemp "$SCRATCH/data.XXXXXX")
	head -c "$1" /dev/urandom >"$f"
	echo "$f"
}

# expect_table_refused <name> <expected message> <table>: dmsetup create must fail, and the
# kernel log must carry the expected message for it.
expect_table_refused() {
	local name=$1 msg=$2 table=$3 mark
	mark="dm-rust selftest: $name $RANDOM"
	echo "$mark" >/dev/kmsg
	if dmsetup create "$name" --table "$table" 2>"$SCRATCH/err"; then
		fail "table '$table' was accepted"
	fi
	dmsetup info "$name" >/dev/null 2>&1 && fail "device $name exists after a refused table"
	dmesg | sed -n "/$mark/,\$p" | grep -q -- "$msg" ||
		fail "no '$msg' in the kernel log for '$table': $(dmesg | sed -n "/$mark/,\$p" | tail -n 3)"
	echo "refused: $table -> $msg"
}
