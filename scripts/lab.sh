#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the dm-rust lab from nothing, or reuses the cached one:
#   - a Debian trixie root filesystem holding the exact toolchain that built the target kernel
#     (versions read from the kernel headers' .config and pinned),
#   - Debian's kernel image, headers and source for that release,
#   - the kernel source tree configured like Debian's and prepared (modules_prepare), which regenerates the
#     Rust metadata (rust/*.rmeta, libmacros.so) that Debian's headers package does not ship,
#   - virtme-ng in a Python venv and QEMU on the host, to boot that kernel in a guest.
#
# Usage: scripts/lab.sh [setup|env]
#   setup  build or check the lab (default)
#   env    print shell assignments describing the lab (KDIR, ROOTFS, ...), for the Makefile and scripts
#
# Environment: KREL (kernel release, default 7.3.4+deb13-amd64), DM_RUST_LAB (cache, default /var/tmp/dm-rust-lab).
set -euo pipefail

KREL=${KREL:-7.3.4+deb13-amd64}
LAB=${DM_RUST_LAB:-/var/tmp/dm-rust-lab}
SUITE=${DM_RUST_SUITE:-trixie}
VNG_VERSION=1.42
BASE=$LAB/$KREL
ROOTFS=$BASE/rootfs
STAMPS=$BASE/stamps

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

# The Debian mirror this host already uses (first URI of its apt sources that serves the main archive).
host_mirror() {
	local uri
	uri=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
		 grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'; } |
		grep -E '/debian/?$' | head -n 1)
	[ -n "$uri" ] || die "no Debian mirror found in the host's apt sources"
	echo "${uri%/}"
}

in_root() {
	chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@"
}

mount_root() {
	mountpoint -q "$ROOTFS/proc" || mount -t proc proc "$ROOTFS/proc"
	mountpoint -q "$ROOTFS/dev" || mount --bind /dev "$ROOTFS/dev"
	trap umount_root EXIT
}

# virtme-ng shares the root filesystem with the guest: nothing may stay mounted in it.
umount_root() {
	local m
	for m in dev proc; do
		mountpoint -q "$ROOTFS/$m" && umount -l "$ROOTFS/$m"
	done
	return 0
}

step_done() { [ -e "$STAMPS/$1" ]; }
mark() { mkdir -p "$STAMPS"; touch "$STAMPS/$1"; }

host_packages() {
	local need=() p
	for p in debootstrap qemu-system-x86 kmod python3-venv ovmf; do
		dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
	done
	[ ${#need[@]} -eq 0 ] && return 0
	log "installing host packages: ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

bootstrap_root() {
	step_done rootfs && return 0
	local mirror
	mirror=$(host_mirror)
	log "debootstrap $SUITE into $ROOTFS"
	rm -rf "$ROOTFS"
	mkdir -p "$ROOTFS"
	debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$mirror" >"$BASE/debootstrap.log" 2>&1 ||
		die "debootstrap failed, see $BASE/debootstrap.log"
	cat >"$ROOTFS/etc/apt/sources.list" <<-EOF
	deb $mirror $SUITE main
	deb $mirror $SUITE-updates main
	deb $mirror $SUITE-backports main
	EOF
	mark rootfs
}

# Kernel packages first: the headers' .config names the toolchain to pin.
kernel_packages() {
	step_done kernel-packages && return 0
	log "installing kernel $KREL (image, headers, source)"
	in_root apt-get update -qq
	local srcpkg="linux-source-${KREL%%.*}.$(echo "$KREL" | cut -d. -f2)"
	# Only the kernel packages come from backports ("pkg/suite"); their dependencies stay on the release.
	in_root apt-get install -y -qq --no-install-recommends initramfs-tools \
		"linux-image-$KREL/$SUITE-backports" "linux-headers-$KREL/$SUITE-backports" \
		"$srcpkg/$SUITE-backports" >/dev/null ||
		die "could not install the kernel packages for $KREL"
	mark kernel-packages
}

config_value() {
	sed -n "s/^$1=\"\(.*\)\"$/\1/p" "$ROOTFS/usr/src/linux-headers-$KREL/.config"
}

# Debian package version whose upstream part is $2 (e.g. rustc 1.85.1 -> 1.85.1+dfsg1-1+deb13u1).
pick_version() {
	local pkg=$1 upstream=$2 v
	v=$(in_root apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
		grep -E "^([0-9]+:)?${upstream//./\\.}([+~-]|$)" | head -n 1)
	[ -n "$v" ] || die "$pkg $upstream (the kernel's build toolchain) is not available from the mirror"
	echo "$v"
}

read_toolchain() {
	local cfg=$ROOTFS/usr/src/linux-headers-$KREL/.config
	[ -f "$cfg" ] || die "missing $cfg"
	RUSTC_UP=$(config_value CONFIG_RUSTC_VERSION_TEXT | awk '{print $2}')
	BINDGEN_UP=$(config_value CONFIG_BINDGEN_VERSION_TEXT | awk '{print $2}')
	# "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0": the Debian version is inside the parentheses.
	GCC_CMD=$(config_value CONFIG_CC_VERSION_TEXT | awk '{print $1}')
	GCC_DEB=$(config_value CONFIG_CC_VERSION_TEXT | sed -n 's/.*(Debian \([^)]*\)).*/\1/p')
	GCC_MAJOR=${GCC_CMD##*-}
	[ -n "$RUSTC_UP" ] && [ -n "$BINDGEN_UP" ] && [ -n "$GCC_DEB" ] ||
		die "cannot read the toolchain versions from $cfg"
	TOOLKEY="rustc-$RUSTC_UP-bindgen-$BINDGEN_UP-gcc-$GCC_DEB"
	KDIR_IN_ROOT=/usr/src/dm-rust-kernel/$TOOLKEY
	KDIR=$ROOTFS$KDIR_IN_ROOT
}

toolchain() {
	read_toolchain
	step_done "toolchain-$TOOLKEY" && return 0
	local rv bv gv
	rv=$(pick_version rustc "$RUSTC_UP")
	bv=$(pick_version bindgen "$BINDGEN_UP")
	gv=$(pick_version "gcc-$GCC_MAJOR" "$GCC_DEB")
	log "installing toolchain: rustc $rv, bindgen $bv, gcc-$GCC_MAJOR $gv"
	in_root apt-get install -y -qq --no-install-recommends \
		"rustc=$rv" "rust-src=$rv" "libstd-rust-dev=$rv" "bindgen=$bv" \
		"gcc-$GCC_MAJOR=$gv" "cpp-$GCC_MAJOR=$gv" "gcc-$GCC_MAJOR-base=$gv" \
		make python3 flex bison bc libelf-dev libssl-dev dwarves cpio xz-utils zstd kmod \
		dmsetup cryptsetup-bin busybox-static initramfs-tools udev util-linux e2fsprogs \
		bpftrace keyutils openssl fio coreutils procps >/dev/null ||
		die "toolchain install failed"
	in_root apt-get clean
	mark "toolchain-$TOOLKEY"
}

kmake() {
	in_root make -C "$KDIR_IN_ROOT" ARCH=x86 CROSS_COMPILE=x86_64-linux-gnu- \
		CC="$GCC_CMD" HOSTCC="gcc-$GCC_MAJOR" KERNELRELEASE="$KREL" "$@"
}

kernel_tree() {
	read_toolchain
	step_done "tree-$TOOLKEY" && return 0
	local tarball
	tarball=$(ls "$ROOTFS"/usr/src/linux-source-*.tar.xz 2>/dev/null | head -n 1)
	[ -n "$tarball" ] || die "linux-source tarball missing"
	log "unpacking $(basename "$tarball")"
	rm -rf "$KDIR"
	mkdir -p "$KDIR"
	tar -xJf "$tarball" -C "$KDIR" --strip-components=1
	cp "$ROOTFS/usr/src/linux-headers-$KREL/.config" "$KDIR/.config"
	kmake olddefconfig >/dev/null
	cmp -s "$KDIR/.config" "$ROOTFS/usr/src/linux-headers-$KREL/.config" ||
		die "the regenerated .config differs from Debian's: the toolchain does not match the kernel's"
	log "modules_prepare (regenerates the Rust metadata)"
	kmake -j"$(nproc)" modules_prepare >"$BASE/modules_prepare.log" 2>&1 ||
		die "modules_prepare failed, see $BASE/modules_prepare.log"
	[ -f "$KDIR/rust/libkernel.rmeta" ] || die "modules_prepare built no Rust metadata (rust/libkernel.rmeta)"
	cp "$ROOTFS/usr/src/linux-headers-$KREL/Module.symvers" "$KDIR/Module.symvers"
	# Module BTF is generated against the running kernel's vmlinux when the tree has one.
	local vml
	for vml in "$ROOTFS/usr/src/linux-headers-$KREL/vmlinux" "$ROOTFS/usr/lib/debug/boot/vmlinux-$KREL"; do
		[ -e "$vml" ] && ln -sf "${vml#"$ROOTFS"}" "$KDIR/vmlinux" && break
	done
	mark "tree-$TOOLKEY"
}

virtme() {
	step_done "vng-$VNG_VERSION" && return 0
	log "installing virtme-ng $VNG_VERSION"
	rm -rf "$LAB/venv"
	python3 -m venv "$LAB/venv"
	"$LAB/venv/bin/pip" install -q "virtme-ng==$VNG_VERSION" || die "pip install virtme-ng failed"
	mark "vng-$VNG_VERSION"
}

print_env() {
	read_toolchain
	cat <<-EOF
	KREL=$KREL
	LAB=$LAB
	ROOTFS=$ROOTFS
	KDIR=$KDIR
	KDIR_IN_ROOT=$KDIR_IN_ROOT
	GCC_CMD=$GCC_CMD
	HOSTCC=gcc-$GCC_MAJOR
	VNG=$LAB/venv/bin/vng
	EOF
}

case "${1:-setup}" in
setup)
	[ "$(id -u)" -eq 0 ] || die "the lab needs root (debootstrap, chroot)"
	mkdir -p "$BASE"
	start=$(date +%s)
	host_packages
	bootstrap_root
	mount_root
	kernel_packages
	toolchain
	kernel_tree
	umount_root
	virtme
	log "ready in $(( $(date +%s) - start ))s: KDIR=$KDIR"
	;;
env)
	print_env
	;;
*)
	die "usage: $0 [setup|env]"
	;;
esac
