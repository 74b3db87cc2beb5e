#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs the dm-rust selftests inside the guest and prints their KTAP, then the run's gates and
# "N passed, N failed, N skipped" (also written to /dm-rust/build/selftests.<impl>.result for the
# host). Each test is checked by lib.sh's gates; after all scripts, this checks that the kernel log
# of the whole run is clean and that every skip is one the README allows.
#
# Usage: run_guest.sh [--impl=rust|kernel] [test scripts...]
#   --impl=rust    (default) our targets; the scripts are TEST_PROGS of the Makefile
#   --impl=kernel  the kernel's own C targets of the same job, as a reference; the scripts are
#                  REFERENCE_PROGS of the Makefile
# The first line of the output names the implementation under test.
exec 2>&1
cd "$(dirname "$0")" || exit 1
impl=rust
case ${1:-} in
--impl=*)
	impl=${1#--impl=}
	shift
	;;
esac
case $impl in
rust) list=TEST_PROGS ;;
kernel) list=REFERENCE_PROGS ;;
*)
	echo "run_guest: unknown implementation '$impl' (rust or kernel)"
	exit 2
	;;
esac
export DM_RUST_IMPL=$impl
# The host's build directory (build/debug for FLAVOUR=debug, see run-selftests.sh).
BUILD=${DM_RUST_BUILD:-/dm-rust/build}
export DM_RUST_BUILD=$BUILD
RESULTS=$BUILD/selftests.$impl.result
export PROGRESS=$BUILD/selftests.$impl.progress
README=/dm-rust/README.md
# The hung-task detector reports a task blocked this long; restored at the end.
HUNG_TASK_SECS=${HUNG_TASK_SECS:-30}

. ./lib.sh
echo "# implementation under test: $(impl_description)"
echo "# kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB"
: >"$PROGRESS"
progress "run_guest: booted after $(cut -d' ' -f1 /proc/uptime) s"

progs=("$@")
[ ${#progs[@]} -gt 0 ] || read -ra progs <<<"$(sed -n "s/^$list := //p" Makefile)"

hung0=$(cat /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null)
restore_sysctls() { [ -z "$hung0" ] || echo "$hung0" >/proc/sys/kernel/hung_task_timeout_secs; }
trap restore_sysctls EXIT
if [ -w /proc/sys/kernel/hung_task_timeout_secs ]; then
	echo "$HUNG_TASK_SECS" >/proc/sys/kernel/hung_task_timeout_secs
	echo "# hung-task detector: tasks blocked for more than $HUNG_TASK_SECS s are reported"
else
	echo "# no hung-task detector in this kernel"
fi

pass=0 failed=0 skipped=0
skips=()
# count <script>: prints the script's KTAP from stdin and counts it; sets script_failed,
# script_totals and script_rc (from the "# exit status" line added below).
count() {
	local line
	script_failed=0 script_totals= script_rc=
	while IFS= read -r line; do
		case $line in
		"# exit status: "*)
			script_rc=${line#\# exit status: }
			continue
			;;
		esac
		printf '%s\n' "$line"
		case $line in
		"ok "*"# SKIP"*)
			skipped=$((skipped + 1))
			line=${line#ok * }
			skips+=("$1 ${line%% # SKIP*}")
			;;
		"ok "*) pass=$((pass + 1)) ;;
		"not ok "*)
			failed=$((failed + 1))
			script_failed=$((script_failed + 1))
			;;
		"# Totals: "*) script_totals=$line ;;
		esac
	done
}
# gate <name> <problem text>: one more KTAP line, failed if there is a problem.
gate() {
	if [ -n "$2" ]; then
		printf '%s\n' "$2" | sed 's/^/# /'
		count run_guest <<<"not ok 1 $1"
	else
		count run_guest <<<"ok 1 $1"
	fi
}

# The boot's udev coldplug must be over before the first device-mapper command, which waits for
# udev to process its events: the debug kernel's boot gives up waiting for it after 5 minutes
# while udev is still busy, and the first test then spends its time limit in integritysetup.
t0=$(cut -d' ' -f1 /proc/uptime)
udevadm settle --timeout=1200 2>/dev/null || echo "# udev did not settle in 1200 s"
progress "run_guest: udev settled after $(awk -v t0="$t0" '{ printf "%.1f", $1 - t0 }' /proc/uptime) s"

# Devices named rs_noscan* fail every read by design (a wrong salt or root digest): udev's probe
# (blkid) of such a device reads and fails for many seconds under emulation, and keeps it busy
# so that the test's `dmsetup remove` waits. udev leaves them alone, as it does lvm's and
# cryptsetup's internal devices (the same flags).
mkdir -p /run/udev/rules.d
cat >/run/udev/rules.d/56-dm-rust-selftests.rules <<'RULE'
SUBSYSTEM=="block", KERNEL=="dm-[0-9]*", ENV{DM_NAME}=="rs_noscan*", ENV{DM_UDEV_DISABLE_DISK_RULES_FLAG}="1", ENV{DM_UDEV_DISABLE_OTHER_RULES_FLAG}="1", OPTIONS:="nowatch"
RULE
udevadm control --reload 2>/dev/null || true

dmesg -C
# The debug kernel (make check-debug) has kmemleak: forget what it suspects from the boot, so that
# leak_check.sh reports only what the selftests leave behind.
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
if [ -w /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak
	echo clear >/sys/kernel/debug/kmemleak
fi
# The guest's /usr is an overlay (memory over the host's root, which virtme-ng exports by 9p
# without a cache): a tool the tests run hundreds of times, and its libraries, would be read over
# 9p again and again. Opening a file for writing copies it up into the overlay's memory once (its
# content unchanged); only the tools below and the libraries they load, a few tens of MiB.
warm_tools() {
	local c f l n=0 t=$SECONDS
	local -a bins=()
	local -A seen=()
	for c in bash dd cmp od tr awk sed grep head tail cat rm cp mv mkdir mktemp stat sleep seq kill \
		timeout truncate wc cut sort md5sum sync blockdev losetup lsblk blkdiscard fallocate \
		filefrag dmsetup veritysetup cryptsetup integritysetup mkfs.ext4 e2fsck mount umount \
		fio keyctl openssl udevadm modprobe insmod rmmod dmesg xfs_io; do
		f=$(type -P "$c") && bins+=("$f") && seen[$f]=1
	done
	while read -r l; do
		case $l in *"=> /"*) l=${l#*=> } ;; /*) ;; *) continue ;; esac
		seen[${l%% (*}]=1
	done < <(ldd "${bins[@]}" 2>/dev/null)
	for f in "${!seen[@]}"; do
		{ : >>"$f"; } 2>/dev/null && n=$((n + 1))
	done
	echo "# warm_tools: $n tools and libraries copied up into the overlay's memory in $((SECONDS - t)) s"
}
warm_tools

# Per script (selftests/settings); the debug kernel (KASAN, lockdep) runs several times slower.
limit=$(sed -n 's/^timeout=//p' settings)
case $(uname -r) in *-dmrust-debug) limit=$((limit * 3)) ;; esac
for p in "${progs[@]}"; do
	echo "# selftest: $p"
	progress "$p: started"
	count "$p" < <(timeout "$limit" "./$p" 2>&1; echo "# exit status: $?")
	progress "$p: ended (exit status $script_rc)"
	# A script whose verdict is not its totals counts as one failure more: it died or timed out
	# (no totals), or it did not run all it planned (a non-zero status without a failed test).
	if [ -z "$script_totals" ]; then
		count "$p" <<<"not ok - $p ended without its totals (exit status $script_rc)"
	elif [ "$script_rc" != 0 ] && [ "$script_failed" = 0 ]; then
		count "$p" <<<"not ok - $p exited with $script_rc"
	elif [ "$script_rc" = 0 ] && [ "$script_failed" != 0 ]; then
		count "$p" <<<"not ok - $p exited with 0 although $script_failed of its tests failed"
	fi
done

echo "# selftest: run_guest"
progress "run_guest: final gates"
gate kernel_log_clean "$(dmesg | grep -E -- "$KLOG_BAD|ODEBUG" | head -n 20)"
dmesg >"$BUILD/kernel.log" 2>/dev/null && chmod 644 "$BUILD/kernel.log"
taint=$(cat /proc/sys/kernel/tainted)
gate not_tainted "$([ $((taint & ~TAINT_EXPECTED)) = 0 ] || echo "the kernel is tainted ($taint) by more than module loading")"
# A skip passes only if the README lists it (section "Skips allowed": | script | test | why |;
# with --impl=kernel also section "Skips allowed in the reference run", of what only ours has).
allowed=$(awk -v impl="$impl" '/^#+ Skips allowed$/ { on = 1; next }
	/^#+ Skips allowed in the reference run$/ { on = impl == "kernel"; next } on && /^#/ { on = 0 }
	on && /^\| *[^ |-]/ { split($0, f, "|"); s = f[2]; t = f[3]; gsub(/[ `]/, "", s); gsub(/[ `]/, "", t);
		if (s != "script") print s " " t }' "$README" 2>/dev/null)
bad_skips=
for s in "${skips[@]}"; do
	grep -qxF -- "$s" <<<"$allowed" || bad_skips+="skipped, and not listed in the README's \"Skips allowed\": $s"$'\n'
done
gate skips_allowed "${bad_skips%$'\n'}"

summary="$pass passed, $failed failed, $skipped skipped"
echo "$summary" >"$RESULTS"
progress "run_guest: $summary"
echo "$summary"
