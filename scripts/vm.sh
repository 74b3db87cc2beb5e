#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the lab's Debian kernel in a QEMU guest with virtme-ng and runs a script there as root.
# The guest's root is the lab's root filesystem (read-only, with tmpfs overlays); this repository
# is shared read-write at /dm-rust. Software emulation is used unless the CPU shows vmx/svm
# (nested PVM "KVM" cannot run a stock kernel).
#
# Usage: scripts/vm.sh <script relative to the repository> [args...]
# Environment: VM_MEMORY (default 2G), VM_CPUS (default 2), VM_OVMF=1 to boot through OVMF with
# the test certificate in db (see scripts/ovmf.sh); VM_OVMF_VARS=<file> to boot through OVMF with that
# variable store instead (a copy is used); VM_APPEND="..." for more kernel command-line options;
# FLAVOUR=debug to boot the lab's debug kernel (scripts/lab.sh) instead of Debian's; VM_CONSOLE=<file>
# to keep the guest's kernel console (every kernel message, from the first line of the boot) in
# that file, together with the guest's stderr; VM_STARTED=<file> to have the time the guest starts
# (after the lock below) written there, for a caller that watches the guest.
# Guests run one at a time on this machine (a lock in the lab), so two checkouts may call this.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/lab.sh env)"

[ $# -ge 1 ] || { echo "usage: $0 <script> [args...]" >&2; exit 2; }
cmd="cd /dm-rust && $(printf '%q ' "$@")"
# virtme-ng hands the command to the guest on the kernel command line (in base64), which the
# kernel cuts at 2048 bytes: a longer command boots a guest that runs nothing and says nothing.
[ ${#cmd} -le 1000 ] || { echo "vm: the command is ${#cmd} bytes, too long for the kernel command line (pass a file in the repository)" >&2; exit 2; }

kvm=--disable-kvm
if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
	kvm=
fi

qemu_opts=()
if [ -n "${VM_OVMF_VARS:-}" ]; then
	# OVMF writes into its variable store: one copy per boot (copies older than a day are removed).
	find "$LAB" -maxdepth 1 -name 'vars.boot.*' -mmin +1440 -delete 2>/dev/null || true
	vars=$(mktemp "$LAB/vars.boot.XXXXXX")
	cp "$VM_OVMF_VARS" "$vars"
	qemu_opts=(--qemu-opts="-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,unit=1,file=$vars")
elif [ "${VM_OVMF:-0}" = 1 ]; then
	vars=$(scripts/ovmf.sh vars)
	qemu_opts=(--qemu-opts="-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,unit=1,file=$vars")
fi

append=${VM_APPEND:-}
# The debug kernel boots with 4-level paging. QEMU's emulated CPU offers 5-level paging (la57), and
# with it the debug kernel's KASAN reports a wild access in the first timer interrupt during boot
# (handle_edge_irq, in identify_cpu, before any module); that report taints the kernel, which turns
# lockdep off and silences KASAN (it reports once) for the whole run. With no5lvl: no report,
# lockdep on, taint 0 (both boots made 2026-11-24).
[ "${FLAVOUR:-}" != debug ] || append="no5lvl${append:+ $append}"
[ -z "$append" ] || qemu_opts+=(--append="$append")

mkdir -p "$ROOTFS/dm-rust"
# Emulation is CPU-bound and the machine has two cores: one guest at a time, whoever starts it.
exec 8>"$LAB/guest.lock"
if ! flock -n 8; then
	echo "vm: waiting for the guest running from another checkout to end" >&2
	flock 8
fi
[ -z "${VM_STARTED:-}" ] || date +%s >"$VM_STARTED"
verbose=
if [ -n "${VM_CONSOLE:-}" ]; then
	verbose=--verbose
	exec 2>"$VM_CONSOLE"
fi
export PATH="$(dirname "$VNG"):$PATH"
exec "$VNG" $kvm $verbose -r "$ROOTFS/boot/vmlinuz-$KREL" --root "$ROOTFS" --busybox "$ROOTFS/usr/bin/busybox" \
	--user root -m "${VM_MEMORY:-2G}" -p "${VM_CPUS:-2}" --rwdir="/dm-rust=$PWD" \
	"${qemu_opts[@]}" --exec "$cmd"
