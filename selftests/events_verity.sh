#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# verity's security policy and events, as dm-verity has them: corruption reported by KOBJ_CHANGE
# uevents (DM_VERITY_ERR_BLOCK_NR) and log lines users grep for, counted whatever printk's rate
# limit lets through; require_signatures, as a module parameter and as dm_verity's parameter on the
# kernel command line; the .dm-verity keyring (keyring_unsealed).
# Runs on the implementation verity_lib.sh selects (VERITY_IMPL), the kernel's dm-verity included.
cd "$(dirname "$0")" && . ./lib.sh && . ./verity_lib.sh

# reload_verity [module parameters...]: the verity target of $VERITY_IMPL again, with parameters.
reload_verity() {
	cleanup_devices
	case $VERITY_IMPL in
	kernel)
		if module_loaded dm_verity; then rmmod dm_verity || fail "dm_verity is busy"; fi
		modprobe dm_verity "$@"
		;;
	*)
		if module_loaded dm_rust; then rmmod dm_rust || fail "dm_rust is busy"; fi
		# What device-mapper's request_module does (the install line adds the parameters of
		# dm-rust.conf; modprobe adds those given here).
		modprobe dm_rust "$@"
		;;
	esac
	verity_registered || fail "no verity target after reloading with '$*'"
}

# A 1 MiB image opened by veritysetup as rs_ev: $data, $hash, $root, $dl, $hl.
open_image() {
	data=$(data_file 1024)
	hash=$(scratch hash)
	root=$(vformat "$data" "$hash")
	dl=$(ro_loop "$data")
	hl=$(ro_loop "$hash")
	veritysetup open "$dl" rs_ev "$hl" "$root" "$@"
}

# audit_enabled <0|1>: switches the kernel's audit on or off (AUDIT_SET over netlink, what
# `auditctl -e` does; the guest has no auditd). device-mapper sends its records only while audit
# is enabled; with no daemon listening, kauditd prints them to the kernel log.
audit_enabled() {
	python3 - "$1" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)  # NETLINK_AUDIT
payload = struct.pack("=II", 1, int(sys.argv[1]))  # mask AUDIT_STATUS_ENABLED, enabled
msg = struct.pack("=IHHII", 16 + len(payload), 1001, 1 | 4, 1, 0) + payload  # AUDIT_SET, REQUEST|ACK
s.sendto(msg, (0, 0))
reply = s.recv(4096)
length, kind, flags, seq, pid, err = struct.unpack("=IHHIIi", reply[:20])
sys.exit(0 if kind == 2 and err == 0 else 1)  # NLMSG_ERROR with 0: acknowledged
PY
}

# udevadm monitor of kernel uevents, into $SCRATCH/uevents; waits until it listens.
mon_pid=
start_monitor() {
	: >"$SCRATCH/uevents"
	udevadm monitor --kernel --property --subsystem-match=block >"$SCRATCH/uevents" 2>&1 &
	mon_pid=$!
	for _ in $(seq 100); do
		grep -q 'KERNEL' "$SCRATCH/uevents" && return 0
		sleep 0.1
	done
	fail "udevadm monitor did not start: $(cat "$SCRATCH/uevents")"
}
stop_monitor() {
	[ -n "$mon_pid" ] && kill "$mon_pid" 2>/dev/null && wait "$mon_pid" 2>/dev/null
	mon_pid=
	return 0
}

# Three corrupted data blocks read while printk's rate limit lets nothing through: each is still
# counted and reported by a uevent naming the block; a fourth, with the limit restored, is logged
# as "device-mapper: verity: <dev>: data block <n> is corrupted" and has its audit record.
test_corruption_events() {
	local burst b mark
	command -v udevadm >/dev/null || fail "udevadm is not in the guest"
	open_image
	start_monitor
	for b in 10 20 30 40; do corrupt_byte "$data" $((b * 4096 + 7)); done
	burst=$(cat /proc/sys/kernel/printk_ratelimit_burst)
	echo 0 >/proc/sys/kernel/printk_ratelimit_burst
	for b in 10 20 30; do expect_eio /dev/mapper/rs_ev 4096 "$b"; done
	echo "$burst" >/proc/sys/kernel/printk_ratelimit_burst
	mark=$(kmsg_mark)
	audit_enabled 1 || fail "cannot enable audit"
	trap 'audit_enabled 0' EXIT
	expect_eio /dev/mapper/rs_ev 4096 40
	audit_enabled 0
	trap - EXIT
	# The uevents are sent before the bio completes: by now they are all out.
	for _ in $(seq 50); do
		[ "$(grep -c '^DM_VERITY_ERR_BLOCK_NR=' "$SCRATCH/uevents")" -ge 4 ] && break
		sleep 0.1
	done
	stop_monitor
	grep '^DM_VERITY_ERR_BLOCK_NR=' "$SCRATCH/uevents"
	for b in 10 20 30 40; do
		grep -qx "DM_VERITY_ERR_BLOCK_NR=0,$b" "$SCRATCH/uevents" ||
			fail "no uevent DM_VERITY_ERR_BLOCK_NR=0,$b: $(grep DM_VERITY "$SCRATCH/uevents" | tr '\n' ' ')"
	done
	grep -B20 'DM_VERITY_ERR_BLOCK_NR' "$SCRATCH/uevents" | grep -q '^ACTION=change' || fail "uevent is not a change event"
	dmesg_since "$mark" | grep -q "device-mapper: verity: $(majmin "$dl"): data block 40 is corrupted" ||
		fail "no 'device-mapper: verity: $(majmin "$dl"): data block 40 is corrupted' in the log: $(dmesg_since "$mark" | tail -n 3)"
	# The audit record (printed by kauditd when no audit daemon listens), after the bio failed.
	for _ in $(seq 50); do
		dmesg_since "$mark" | grep -q "op=verify-data dev=$(majmin "$dl") sector=40 res=0" && break
		sleep 0.1
	done
	dmesg_since "$mark" | grep -q "op=verify-data dev=$(majmin "$dl") sector=40 res=0" ||
		fail "no audit record 'op=verify-data dev=$(majmin "$dl") sector=40 res=0': $(dmesg_since "$mark" | grep audit | tail -n 3); audit in the boot log: $(dmesg | grep -i audit | head -n 3); cmdline: $(cat /proc/cmdline)"
	[ "$(status_char rs_ev)" = C ] || fail "status is not C"
	veritysetup close rs_ev
}

# A corrupted hash block is reported with the metadata kind (1) and its block number.
test_metadata_corruption_event() {
	data=$(data_file 1024)
	hash=$(scratch hash)
	root=$(vformat "$data" "$hash")
	# The hash file: the superblock (block 0), then the top level (block 1, the only block the
	# root digest covers), then level 0. Corrupt the top-level block before opening.
	corrupt_byte "$hash" $((4096 + 100))
	dl=$(ro_loop "$data")
	hl=$(ro_loop "$hash")
	veritysetup open "$dl" rs_ev "$hl" "$root"
	start_monitor
	dd if=/dev/mapper/rs_ev of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null &&
		fail "read through a corrupted hash block succeeded"
	for _ in $(seq 50); do
		grep -q '^DM_VERITY_ERR_BLOCK_NR=1,' "$SCRATCH/uevents" && break
		sleep 0.1
	done
	stop_monitor
	grep -qx 'DM_VERITY_ERR_BLOCK_NR=1,1' "$SCRATCH/uevents" ||
		fail "no uevent DM_VERITY_ERR_BLOCK_NR=1,1: $(grep DM_VERITY "$SCRATCH/uevents" | tr '\n' ' ')"
	veritysetup close rs_ev
}

# require_signatures=1: an unsigned table is refused, a signed one opens.
test_require_signatures_parameter() {
	local mark sig
	need_platform_cert
	reload_verity require_signatures=1
	mark=$(kmsg_mark)
	if open_image 2>/dev/null; then
		fail "an unsigned verity table was accepted with require_signatures=1"
	fi
	dmesg_since "$mark" | grep -q 'Root hash verification failed' ||
		fail "no 'Root hash verification failed' in the log: $(dmesg_since "$mark" | tail -n 3)"
	sig=$(scratch sig)
	sign_roothash "$root" "$sig"
	veritysetup open --root-hash-signature="$sig" "$dl" rs_ev "$hl" "$root" ||
		fail "a signed table was refused with require_signatures=1"
	cmp -s /dev/mapper/rs_ev "$data" || fail "data differs"
	veritysetup close rs_ev
	reload_verity
	open_image || fail "unsigned table refused after reloading without require_signatures"
	veritysetup close rs_ev
}

# dm_verity.require_signatures=1 on the kernel command line (a bind mount over /proc/cmdline
# stands in for a boot with it) is honoured by whatever modprobe dm-verity loads; and, for ours,
# also when dm_rust is loaded by its own name (modprobe dm_rust, as for another of its targets:
# modprobe then passes it no dm_verity.* option, dm_rust reads the command line itself).
test_require_signatures_cmdline() {
	local fake how
	cleanup_devices
	fake=$(scratch cmdline)
	printf '%s dm_verity.require_signatures=1\n' "$(cat /proc/cmdline)" >"$fake"
	for how in dm-verity $([ "$VERITY_IMPL" = kernel ] || echo dm_rust); do
		case $VERITY_IMPL in kernel) rmmod dm_verity ;; *) rmmod dm_rust ;; esac
		mount --bind "$fake" /proc/cmdline
		local r=0
		modprobe "$how" || r=$?
		umount /proc/cmdline
		[ $r -eq 0 ] || fail "modprobe $how failed"
		verity_registered || fail "no verity target after modprobe $how"
		if open_image 2>/dev/null; then
			fail "modprobe $how: an unsigned table was accepted with dm_verity.require_signatures=1 on the command line"
		fi
		echo "modprobe $how: unsigned table refused"
	done
	reload_verity
	open_image || fail "unsigned table refused after reloading without it"
	veritysetup close rs_ev
}

# The .dm-verity keyring: with keyring_unsealed=1, a certificate root adds there (and then seals
# the keyring) makes signatures by its key valid; before, they are refused.
test_dm_verity_keyring() {
	local key sig
	reload_verity keyring_unsealed=1
	keyctl show %:.dm-verity >/dev/null 2>&1 || fail "no .dm-verity keyring"
	key=$(scratch own)
	untrusted_cert "$key"
	data=$(data_file 1024)
	hash=$(scratch hash)
	root=$(vformat "$data" "$hash")
	dl=$(ro_loop "$data")
	hl=$(ro_loop "$hash")
	sig=$(scratch sig)
	sign_roothash "$root" "$sig" "$key.key" "$key.pem"
	veritysetup open --root-hash-signature="$sig" "$dl" rs_ev "$hl" "$root" 2>/dev/null &&
		fail "a signature by a key in no keyring was accepted"
	openssl x509 -in "$key.pem" -outform der | keyctl padd asymmetric "" %:.dm-verity >/dev/null ||
		fail "cannot add the certificate to .dm-verity"
	keyctl restrict_keyring %:.dm-verity || fail "cannot seal .dm-verity"
	veritysetup open --root-hash-signature="$sig" "$dl" rs_ev "$hl" "$root" ||
		fail "a signature by a key of the sealed .dm-verity keyring was refused"
	cmp -s /dev/mapper/rs_ev "$data" || fail "data differs"
	veritysetup close rs_ev
	reload_verity
}

ktap_plan 6
verity_use_impl || echo "# could not select the verity implementation '$VERITY_IMPL'"
run_test impl_selected test_impl_selected
run_test corruption_events test_corruption_events
run_test metadata_corruption_event test_metadata_corruption_event
run_test require_signatures_parameter test_require_signatures_parameter
run_test require_signatures_cmdline test_require_signatures_cmdline
run_test dm_verity_keyring test_dm_verity_keyring
stop_monitor
verity_restore_impl
ktap_finish
