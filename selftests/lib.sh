# SPDX-License-Identifier: GPL-2.0
# Shared helpers of the dm-rust selftests: KTAP output, the gates run after every test, scratch
# loop devices, assertions and waits.
#
# A script: `. ./lib.sh`, `ktap_plan N`, `run_test <name> <function> [args...]` N times, and
# `ktap_finish` as its last word (it exits with the script's verdict: 0 only if all N tests ran and
# none failed). A test is a shell function that run_test runs in a subshell with `set -eu`:
#   - it fails by exiting non-zero (use `fail "why"`), or by tripping a gate below;
#   - it skips only by calling `skip "why"` (only for something the guest lacks). A skip is the
#     marker file that skip() writes together with its own exit status; no tool's exit status can
#     produce one (veritysetup & co. return 4, kselftest's skip code, for a wrong device: that is a
#     failure). run_guest.sh fails the run on any skip that the README does not list.
# The gates, checked after each test (each makes the test fail, the reason as a KTAP comment):
#   - it ended within $TEST_TIMEOUT seconds (it and its children are killed otherwise);
#   - the kernel log since it started has no warning, BUG, oops, hung task, soft lockup, RCU stall
#     or other report (see KLOG_BAD), and the kernel's taint did not change (the O and E flags that
#     loading an out-of-tree, unsigned module sets excepted);
#   - global settings (sysctls, the dm modules' parameters, the user keyring) are as before the
#     test, and it left nothing mounted: a test restores what it changes (the harness then puts
#     the values back for the next test);
#   - after cleanup_devices (which removes the dm devices named rs_*, detaches the loop devices over
#     files in $SCRATCH and deletes the files there), no dm device, loop device or file in $SCRATCH
#     remains that was not there before the test. (/tmp itself is not watched: in the guest it is
#     an overlay over the lab's /tmp, which changes with the host's use of the lab.)
# Files a script keeps across its tests go in $SCRATCH under names starting with "."; everything
# else in $SCRATCH belongs to the running test and is deleted after it.
# SELFTEST_ONLY (test names, space-separated), set by the mutation check from a mutant's "Tests:"
# line, runs only those tests; the others are reported as skipped and not run (run_guest.sh would
# fail such a run: it is not for make check).
# SELFTEST_TRACE (a file) appends every command the tests run, each with its start time (bash's
# xtrace, PS4 with $EPOCHREALTIME), for scripts/selftest-profile.py to say where the time goes.
#
# The implementation under test is chosen only by DM_RUST_IMPL (run_guest.sh --impl sets it):
#   rust    (default) ours: dm_rust.ko's targets (linear-rs; verity, see verity_lib.sh)
#   kernel  the kernel's own C targets of the same job (linear, dm-verity), as a reference that
#           shows what the tests expect is what the kernel does ($LINEAR is the target name)

SCRATCH=${SCRATCH:-/tmp/dm-rust-selftests}
case $(uname -r) in *-dmrust-debug) DM_RUST_KO=${DM_RUST_KO:-/dm-rust/build/debug/dm_rust.ko} ;; esac
DM_RUST_KO=${DM_RUST_KO:-/dm-rust/build/dm_rust.ko}
# The test module with RAM disks that have inline encryption (passthrough.sh); a mutant's run
# (DM_RUST_KO of build/mutants/) keeps the unmodified one.
case $(uname -r) in *-dmrust-debug) DM_RUST_TEST_INLINE_KO=${DM_RUST_TEST_INLINE_KO:-/dm-rust/build/debug/dm_rust_test_inline.ko} ;; esac
DM_RUST_TEST_INLINE_KO=${DM_RUST_TEST_INLINE_KO:-/dm-rust/build/dm_rust_test_inline.ko}
DM_RUST_IMPL=${DM_RUST_IMPL:-rust}
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
# A file the host reads to name the test a hung guest was running (set by run_guest.sh).
PROGRESS=${PROGRESS:-}
case $DM_RUST_IMPL in
rust) LINEAR=linear-rs ;;
kernel) LINEAR=linear ;;
*)
	echo "unknown DM_RUST_IMPL '$DM_RUST_IMPL' (rust or kernel)" >&2
	exit 2
	;;
esac
case $SCRATCH in
/tmp/?* | /var/tmp/?* | /run/?*) ;;
*)
	echo "SCRATCH=$SCRATCH: must be a directory below /tmp, /var/tmp or /run (it is emptied)" >&2
	exit 2
	;;
esac
mkdir -p "$SCRATCH"

# Kernel log lines that fail the test during which they appear.
KLOG_BAD='WARNING:|BUG:|Oops|Kernel panic|blocked for more than|soft lockup|hard LOCKUP|rcu.*stall|general protection fault|RIP:|Call Trace:|KASAN|UBSAN|KFENCE|possible recursive locking|circular locking|list_(add|del) corruption|refcount_t:|stack-protector|kernel stack overflow|invalid opcode|Bad page'
# Taint flags that loading dm_rust.ko sets by design: O (out-of-tree, 4096) and E (unsigned, 8192).
TAINT_EXPECTED=$((4096 | 8192))
# The exit status of a skip (with its marker file): no tool uses it.
_SKIP_RC=217

_ktap_n=0
_ktap_planned=0
_ktap_pass=0
_ktap_fail=0
_ktap_skip=0
_ktap_script=$(basename "$0")

# impl_description: one line naming the implementation under test.
impl_description() {
	case $DM_RUST_IMPL in
	rust) echo "rust: ours, $DM_RUST_KO (md5 $(md5sum <"$DM_RUST_KO" | cut -c1-12), $(date -u -r "$DM_RUST_KO" '+built %F %T UTC'))" ;;
	kernel) echo "kernel: the kernel's own C targets (reference run)" ;;
	esac
}

ktap_plan() {
	echo "# implementation: $(impl_description)"
	echo "TAP version 13"
	echo "1..$1"
	_ktap_planned=$1
}

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() {
	echo "SKIP: $*" >&2
	printf '%s\n' "$*" >"$SCRATCH/.test.skip"
	exit $_SKIP_RC
}

progress() {
	[ -n "$PROGRESS" ] || return 0
	printf '%(%H:%M:%S)T %s\n' -1 "$*" >>"$PROGRESS" 2>/dev/null || true
}

# wait_for <seconds> <command...>: runs the command every 0.1 s until it succeeds; returns 1 if it
# has not succeeded within <seconds>. Use it instead of a fixed sleep: `wait_for 10 cond || fail ...`.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}

# Kills a process and all its descendants.
# _describe_tree <pid>: one line per process of the tree (pid, state, where it sleeps in the
# kernel, command line), for a test that timed out: which command hung, and on what.
_describe_tree() {
	local c st wchan cmd
	_read "/proc/$1/wchan" wchan || wchan=?
	st=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)
	echo "hung: pid $1 state ${st:-?} wchan ${wchan:-?}: ${cmd:-?}"
	for c in $(pgrep -P "$1"); do
		_describe_tree "$c"
	done
}

_kill_tree() {
	local c
	kill -STOP "$1" 2>/dev/null
	for c in $(pgrep -P "$1"); do
		_kill_tree "$c" "$2"
	done
	kill -"$2" "$1" 2>/dev/null
	kill -CONT "$1" 2>/dev/null
}

# The snapshots below use shell builtins only (no process started): under emulation on a busy host,
# starting a process takes a good part of a second.

# _read <file> <variable>: the file's content, tabs and newlines as spaces.
_read() {
	local -a l
	mapfile -t l 2>/dev/null <"$1" || return 1
	l=("${l[@]//$'\t'/ }")
	printf -v "$2" '%s' "${l[*]}"
}

# What a test must leave as it found it, one line each in the array _global: the sysctls below, the
# parameters of the dm modules and of loop ("set <file>=<value>"), the user keys ("key ..."), the
# mounts ("mount ...", pseudo file systems that tools mount on first use excepted).
_state_global() {
	local f v line
	local -a m
	_global=()
	for f in /proc/sys/kernel/printk /proc/sys/kernel/printk_ratelimit /proc/sys/kernel/printk_ratelimit_burst \
		/proc/sys/kernel/hung_task_timeout_secs /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops \
		/proc/sys/kernel/panic_on_warn /proc/sys/kernel/softlockup_panic /proc/sys/vm/dirty_ratio \
		/proc/sys/vm/dirty_background_ratio /proc/sys/vm/dirty_expire_centisecs \
		/sys/module/dm_*/parameters/* /sys/module/loop/parameters/*; do
		# Counters the kernel updates by itself are not settings.
		case $f in *allocated* | *peak* | *'*'* | */dm_rust_test_inline/parameters/units_* | \
			*/dm_rust_test_inline/parameters/keyslots_*) continue ;; esac
		_read "$f" v && _global+=("set $f=$v")
	done
	while IFS= read -r line; do
		case $line in *" user "*) _global+=("key ${line#* * * * * * * }") ;; esac
	done </proc/keys
	while read -r -a m; do
		case ${m[2]} in tracefs | debugfs | bpf | securityfs | configfs | efivarfs | binfmt_misc | fusectl | mqueue | hugetlbfs) continue ;; esac
		_global+=("mount ${m[1]} (${m[0]}, ${m[2]})")
	done </proc/mounts
}

# What cleanup_devices must leave as before the test, in the array _devices: dm devices, loop
# devices, files in $SCRATCH (but for the script's own, named .*).
_state_devices() {
	local f v
	_devices=()
	for f in /sys/block/dm-*/dm/name; do
		_read "$f" v && _devices+=("dm device $v")
	done
	for f in /sys/block/loop*/loop/backing_file; do
		_read "$f" v && f=${f#/sys/block/} && _devices+=("loop device /dev/${f%%/*} $v")
	done
	for f in "$SCRATCH"/*; do
		[ -e "$f" ] && _devices+=("file $f")
	done
}

# _changes <before array> <after array>: settings ("set ...=...") present in both with another
# value, and the other lines only in <after>.
_changes() {
	local -n _b=$1 _a=$2
	local -A old=()
	local l
	for l in "${_b[@]}"; do
		case $l in "set "*=*) old[${l%%=*}]=${l#*=} ;; *) old[$l]=1 ;; esac
	done
	for l in "${_a[@]}"; do
		case $l in
		"set "*=*)
			[ -z "${old[${l%%=*}]+x}" ] || [ "${old[${l%%=*}]}" = "${l#*=}" ] ||
				echo "${l#set } (was ${old[${l%%=*}]})"
			;;
		*) [ -n "${old[$l]+x}" ] || echo "$l" ;;
		esac
	done
}

# Puts the settings of the "before" snapshot back and unmounts what was mounted since.
_restore_global() {
	local l f v
	for l in "${_global_before[@]}"; do
		case $l in
		"set /"*=*)
			l=${l#set }
			f=${l%%=*}
			_read "$f" v && [ "$v" != "${l#*=}" ] && { echo "${l#*=}" >"$f"; } 2>/dev/null
			;;
		esac
	done
	while IFS= read -r l; do
		case $l in "mount "*)
			l=${l#mount }
			umount "${l%% (*}" 2>/dev/null || umount -l "${l%% (*}" 2>/dev/null
			;;
		esac
	done < <(_changes _global_before _global)
	return 0
}

# Removes what the test left although cleanup_devices ran: dm devices, loop devices, files.
_force_cleanup() {
	local l
	while IFS= read -r l; do
		case $l in
		"dm device "*) dmsetup remove --force "${l#dm device }" >/dev/null 2>&1 ;;
		"loop device "*) l=${l#loop device }; losetup -d "${l%% *}" 2>/dev/null ;;
		"file "*) rm -rf "${l#file }" 2>/dev/null ;;
		esac
	done < <(_changes _devices_before _devices)
	return 0
}

_gone() { ! kill -0 "$1" 2>/dev/null; }

# _klog_bad <mark>: the kernel log lines after the line <mark> (all of it if the mark has left the
# ring buffer) that match KLOG_BAD.
_klog_bad() {
	dmesg | awk -v m="$1" -v re="$KLOG_BAD" '{ l[NR] = $0 } index($0, m) { from = NR }
		END { for (i = from + 1; i <= NR; i++) if (l[i] ~ re && n++ < 20) print l[i] }'
}

# run_test <name> <function> [args...]
run_test() {
	local name=$1 tg=${EPOCHREALTIME/./} t0 t1 rc out pid wd done_pid mark taint0 taint1 new p problems=()
	local -a _global _devices _global_before _devices_before lines
	shift
	_ktap_n=$((_ktap_n + 1))
	if [ -n "${SELFTEST_ONLY:-}" ] && [[ " $SELFTEST_ONLY " != *" $name "* ]]; then
		echo "ok $_ktap_n $name # SKIP not in SELFTEST_ONLY"
		_ktap_skip=$((_ktap_skip + 1))
		return 0
	fi
	out=$SCRATCH/.test.out
	rm -f "$SCRATCH/.test.skip" "$out"
	progress "$_ktap_script: test $_ktap_n $name: started"
	_state_global
	_global_before=("${_global[@]}")
	_state_devices
	_devices_before=("${_devices[@]}")
	read -r taint0 </proc/sys/kernel/tainted
	t0=${EPOCHREALTIME/./}
	mark="dm-rust selftest: $_ktap_script $_ktap_n $name $RANDOM$RANDOM"
	echo "$mark" >/dev/kmsg

	if [ -n "${SELFTEST_TRACE:-}" ]; then
		(
			exec {BASH_XTRACEFD}>>"$SELFTEST_TRACE"
			PS4='+ $EPOCHREALTIME $BASHPID '
			echo "+ $EPOCHREALTIME $BASHPID TEST $_ktap_script $name" >&"$BASH_XTRACEFD"
			set -eux
			"$@"
		) >"$out" 2>&1 &
	else
		(set -eu; "$@") >"$out" 2>&1 &
	fi
	pid=$!
	sleep "$TEST_TIMEOUT" &
	wd=$!
	done_pid=
	wait -n -p done_pid "$pid" "$wd"
	rc=$?
	t1=${EPOCHREALTIME/./}
	[ -z "${SELFTEST_TRACE:-}" ] || echo "+ $EPOCHREALTIME $BASHPID END" >>"$SELFTEST_TRACE"
	if [ "$done_pid" = "$pid" ]; then
		kill "$wd" 2>/dev/null
		wait "$wd" 2>/dev/null
	else
		_describe_tree "$pid" >>"$out" 2>&1
		_kill_tree "$pid" TERM
		wait_for 10 _gone "$pid" || _kill_tree "$pid" KILL
		wait "$pid" 2>/dev/null
		rc=124
		problems+=("timed out after $TEST_TIMEOUT s: killed")
	fi

	# Gates.
	if [ -e "$SCRATCH/.test.skip" ] && [ "$rc" != $_SKIP_RC ]; then
		problems+=("skip() was called, but the test exited with status $rc")
	elif [ ! -e "$SCRATCH/.test.skip" ] && [ "$rc" = $_SKIP_RC ]; then
		problems+=("exit status $_SKIP_RC without a call of skip()")
	fi
	_state_global
	new=$(_changes _global_before _global)
	[ -z "$new" ] || problems+=("changed and not restored (the harness restores it now): $new")
	_restore_global
	cleanup_devices
	_state_devices
	new=$(_changes _devices_before _devices)
	if [ -n "$new" ]; then
		problems+=("left behind (cleanup_devices could not remove it): $new")
		_force_cleanup
	fi
	new=$(_klog_bad "$mark")
	[ -z "$new" ] || problems+=("kernel log: $new")
	read -r taint1 </proc/sys/kernel/tainted
	if [ $(((taint1 & ~taint0) & ~TAINT_EXPECTED)) -ne 0 ]; then
		problems+=("the kernel became tainted: $taint0 -> $taint1")
	fi

	mapfile -t lines <"$out"
	[ ${#lines[@]} -eq 0 ] || printf '# %s\n' "${lines[@]}"
	tg=$(((${EPOCHREALTIME/./} - t1 + t0 - tg) / 100000)) t0=$(((t1 - t0) / 100000))
	echo "# $name: $((t0 / 10)).$((t0 % 10)) s (gates and cleanup: $((tg / 10)).$((tg % 10)) s)"
	if [ ${#problems[@]} -gt 0 ]; then
		for p in "${problems[@]}"; do
			printf 'gate: %s\n' "$p"
		done | sed 's/^/# /'
		rc=1
	fi
	if [ "$rc" = 0 ]; then
		echo "ok $_ktap_n $name"
		_ktap_pass=$((_ktap_pass + 1))
	elif [ "$rc" = $_SKIP_RC ] && [ ${#problems[@]} -eq 0 ]; then
		echo "ok $_ktap_n $name # SKIP $(head -n 1 "$SCRATCH/.test.skip")"
		_ktap_skip=$((_ktap_skip + 1))
	else
		echo "not ok $_ktap_n $name"
		_ktap_fail=$((_ktap_fail + 1))
	fi
	progress "$_ktap_script: test $_ktap_n $name: ended ($rc)"
	[ ! -e "$SCRATCH/.test.skip" ] || rm -f "$SCRATCH/.test.skip"
}

# The script's verdict, and its last word: exits 0 only if every planned test ran and none failed.
ktap_finish() {
	local rc=0
	if [ "$_ktap_n" -ne "$_ktap_planned" ]; then
		echo "# planned $_ktap_planned tests, ran $_ktap_n"
		rc=1
	fi
	[ "$_ktap_fail" -eq 0 ] || rc=1
	echo "# Totals: pass:$_ktap_pass fail:$_ktap_fail xfail:0 xpass:0 skip:$_ktap_skip error:0"
	exit $rc
}

# Loads dm_rust.ko (after dm-mod) unless it is loaded; extra arguments are module parameters.
# With DM_RUST_IMPL=kernel, only the kernel's device-mapper modules are loaded.
load_module() {
	# insmod loads no dependencies: device-mapper core and dm-bufio first.
	[ -d /sys/module/dm_mod ] && [ -d /sys/module/dm_bufio ] || modprobe -a dm-mod dm-bufio
	[ "$DM_RUST_IMPL" = rust ] || return 0
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
	[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
	f=$(mktemp "$SCRATCH/loop.XXXXXX")
	truncate -s "$1M" "$f"
	losetup -f --show "$f"
}

# Unmounts what is mounted below $SCRATCH, removes the devices the tests made (all named rs_*),
# detaches the loop devices over files in $SCRATCH and deletes the files there (but the script's
# own, named .*).
cleanup_devices() {
	local f v
	local -a m d=()
	while read -r -a m; do
		case ${m[1]} in "$SCRATCH"/*) d=("${m[1]}" "${d[@]}") ;; esac
	done </proc/mounts
	for f in "${d[@]}"; do
		umount "$f" 2>/dev/null || umount -l "$f" 2>/dev/null
	done
	d=()
	for f in /sys/block/dm-*/dm/name; do
		_read "$f" v && [[ $v == rs_* ]] && d+=("$v")
	done
	# One dmsetup for them all (the upper of stacked devices first: rs_v2 before rs_v); each
	# left that way is then forced.
	if [ ${#d[@]} -gt 0 ]; then
		mapfile -t d < <(printf "%s\n" "${d[@]}" | sort -r)
		dmsetup remove --retry "${d[@]}" >/dev/null 2>&1 || for v in "${d[@]}"; do
			[ ! -e "/dev/mapper/$v" ] || dmsetup remove --force "$v" >/dev/null 2>&1
		done
	fi
	d=()
	for f in /sys/block/loop*/loop/backing_file; do
		_read "$f" v && [[ $v == "$SCRATCH"/* ]] && f=${f#/sys/block/} && d+=("/dev/${f%%/*}")
	done
	[ ${#d[@]} -eq 0 ] || losetup -d "${d[@]}" 2>/dev/null
	d=("$SCRATCH"/*)
	[ ! -e "${d[0]}" ] || rm -rf "${d[@]}" 2>/dev/null
	return 0
}

# The helpers below start no process where a shell builtin does: the tests call them hundreds of
# times, and under emulation each process costs a tenth of a second or more.

# word <n> <line>: the n-th word of the line (1-based; empty if there is none).
word() {
	local -a w
	read -ra w <<<"$2"
	[ "$1" -lt 1 ] || printf '%s\n' "${w[$1 - 1]-}"
}

# block_name <device path>: the kernel's name of a block device (loop0, dm-3), for /sys/class/block.
block_name() {
	local f v
	if [[ $1 == /dev/mapper/* ]]; then
		for f in /sys/block/dm-*/dm/name; do
			_read "$f" v && [ "$v" = "${1#/dev/mapper/}" ] && { f=${f#/sys/block/}; echo "${f%%/*}"; return 0; }
		done
		return 1
	fi
	if [ -L "$1" ]; then
		basename "$(readlink -f "$1")"
	else
		echo "${1##*/}"
	fi
}

# Bytes of a device or file: read_at <dev> <byte offset> <count>, to stdout; direct reads of up to
# 1 MiB (offset and count multiples of the logical block size).
read_at() {
	dd if="$1" bs=1M iflag=direct,skip_bytes,count_bytes skip="$2" count="$3" status=none
}

# write_at <dev> <byte offset> <file>: direct writes, in requests as large as the file's size
# allows (up to 1 MiB); from a pipe, 512 bytes at a time. Every request is the same size because dd
# writes a last block shorter than bs without O_DIRECT, into the page cache, where a read of the
# device below would not see it.
write_at() {
	local bs=512 size=0
	[ ! -f "$3" ] || size=$(stat -c %s "$3")
	[ "$size" -eq 0 ] || bs=1048576
	while [ "$bs" -gt 512 ] && [ $((size % bs)) -ne 0 ]; do bs=$((bs / 2)); done
	dd if="$3" of="$1" bs="$bs" oflag=direct,seek_bytes seek="$2" conv=notrunc status=none
}

# random_file <bytes>: a file of random bytes; prints its path.
random_file() {
	local f
	f=$(mktemp "$SCRATCH/data.XXXXXX")
	head -c "$1" /dev/urandom >"$f"
	echo "$f"
}

# disk_stat <block device> <field>: a field of /sys/block/<dev>/stat (1-based, as in
# Documentation/block/stat.rst: 1 reads, 5 writes, 12 discards, 16 flushes completed).
disk_stat() {
	local s
	_read "/sys/class/block/$(block_name "$1")/stat" s
	word "$2" "$s"
}

# dm_exists <name>: a device-mapper device of that name exists.
dm_exists() {
	local f v
	for f in /sys/block/dm-*/dm/name; do
		_read "$f" v && [ "$v" = "$1" ] && return 0
	done
	return 1
}

# klog_has_since <mark> <text>: the kernel log has <text> (a fixed string) after the line that
# ends with <mark>.
klog_has_since() {
	dmesg | awk -v m="$1" -v s="$2" 'f && index($0, s) { found = 1 }
		length($0) >= length(m) && substr($0, length($0) - length(m) + 1) == m { f = 1; found = 0 }
		END { exit !found }'
}

# expect_table_refused <name> <expected message> <table>: dmsetup create must fail, and the
# kernel log must carry the expected message for it.
expect_table_refused() {
	local name=$1 msg=$2 table=$3 mark
	mark="dm-rust selftest: $name $RANDOM$RANDOM"
	echo "$mark" >/dev/kmsg
	if dmsetup create "$name" --table "$table" 2>"$SCRATCH/err"; then
		fail "table '$table' was accepted"
	fi
	! dm_exists "$name" || fail "device $name exists after a refused table"
	klog_has_since "$mark" "$msg" ||
		fail "no '$msg' in the kernel log for '$table': $(dmesg | sed -n "/$mark/,\$p" | tail -n 3)"
	echo "refused: $table -> $msg"
}
