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
# Environment: KREL (kernel release, default 7.3.4+deb13-amd64), DM_RUST_LAB (cache, default /var/tmp/dm-rust-lab),
# FLAVOUR (empty: Debian's kernel; "debug": the same source rebuilt with KASAN, lockdep, kmemleak... as
# release $KREL-dmrust-debug, see scripts/debug-kernel/; setup builds it on top of the lab, env describes it).
set -euo pipefail

KREL=${KREL:-7.3.4+deb13-amd64}
KREL=${KREL%-dmrust-debug}
LAB=${DM_RUST_LAB:-/var/tmp/dm-rust-lab}
SUITE=${DM_RUST_SUITE:-trixie}
VNG_VERSION=1.42
BASE=$LAB/$KREL
ROOTFS=$BASE/rootfs
STAMPS=$BASE/stamps
FLAVOUR=${FLAVOUR:-}
HERE=$(cd "$(dirname "$0")" && pwd)
DEBUG_DIR=$HERE/debug-kernel

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

# The tree is prepared by the same script DKMS runs on a user's system (scripts/prepare-kernel-tree.sh),
# inside the root filesystem: it checks the toolchain against the headers' .config, unpacks the source,
# checks that olddefconfig leaves Debian's .config unchanged, runs modules_prepare and installs
# Module.symvers and the vmlinux link.
kernel_tree() {
	read_toolchain
	step_done "tree-$TOOLKEY" && return 0
	install -D -m 0755 "$HERE/prepare-kernel-tree.sh" "$ROOTFS/usr/local/sbin/dm-rust-prepare-kernel-tree"
	[ "$(in_root /usr/local/sbin/dm-rust-prepare-kernel-tree key "$KREL")" = "$TOOLKEY" ] ||
		die "prepare-kernel-tree.sh and lab.sh disagree on the toolchain key"
	log "preparing the kernel tree (modules_prepare regenerates the Rust metadata)"
	in_root /usr/local/sbin/dm-rust-prepare-kernel-tree prepare "$KREL" "$KDIR_IN_ROOT" >"$BASE/modules_prepare.log" 2>&1 ||
		die "preparing the kernel tree failed, see $BASE/modules_prepare.log and $KDIR/.dm-rust-modules_prepare.log"
	mark "tree-$TOOLKEY"
}

# --- The debug flavour -------------------------------------------------------------------------
# The same Debian source, configured from Debian's .config cut down by `make localmodconfig` to the
# modules in scripts/debug-kernel/modules (plus the crypto API's), with scripts/debug-kernel/config on
# top (KASAN, KFENCE, lockdep, atomic-sleep checks, kmemleak, debugobjects, Rust debug assertions).
# KASAN and Rust together need clang, so this kernel is built with the LLVM whose version rustc was
# built with (the one bindgen's libclang already is). Its modules go to /lib/modules/$DKREL and its
# image to /boot/vmlinuz-$DKREL in the root filesystem; the built tree is what modules build against.
read_debug() {
	local llvm
	llvm=$(cd "$ROOTFS/usr/lib" && ls -d llvm-[0-9]* 2>/dev/null | sort -V | tail -n 1)
	[ -n "$llvm" ] || die "no LLVM in the root filesystem (bindgen's libclang): set up the lab first"
	LLVM_MAJOR=${llvm#llvm-}
	LLVM_DEB=$(dpkg-query --admindir="$ROOTFS/var/lib/dpkg" -W -f '${Version}' "libclang1-$LLVM_MAJOR" 2>/dev/null) ||
		die "libclang1-$LLVM_MAJOR is not installed in the root filesystem"
	DKREL=$KREL-dmrust-debug
	DHASH=$(cat "$DEBUG_DIR/config" "$DEBUG_DIR/modules" | md5sum | cut -c1-8)
	DKEY="rustc-$RUSTC_UP-bindgen-$BINDGEN_UP-clang-${LLVM_DEB//[:~]/_}-config-$DHASH"
	DKDIR_IN_ROOT=/usr/src/dm-rust-kernel-debug/$DKEY
	DKDIR=$ROOTFS$DKDIR_IN_ROOT
	DEBUG_PKGS="clang-$LLVM_MAJOR=$LLVM_DEB lld-$LLVM_MAJOR=$LLVM_DEB llvm-$LLVM_MAJOR=$LLVM_DEB"
}

# The LLVM toolchain, pinned to the version of the libclang already there (installed once per list).
debug_toolchain() {
	local key
	key=$(echo "$DEBUG_PKGS" | md5sum | cut -c1-8)
	step_done "debug-toolchain-$key" && return 0
	log "installing the debug flavour's toolchain: $DEBUG_PKGS"
	# shellcheck disable=SC2086 # one word per package
	in_root_ns apt-get install -y -qq --no-install-recommends $DEBUG_PKGS >/dev/null ||
		die "could not install $DEBUG_PKGS"
	in_root_ns apt-get clean
	mark "debug-toolchain-$key"
}

# Like in_root, in a mount namespace of its own: the long build mounts /proc for itself, where neither
# the guests sharing this root nor another checkout's `lab.sh setup` (which unmounts it) see it.
in_root_ns() {
	unshare --mount --propagation private /bin/sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' \
		"$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@"
}

dmake() {
	in_root_ns nice -n 19 make -C "$DKDIR_IN_ROOT" ARCH=x86 LLVM="-$LLVM_MAJOR" KERNELRELEASE="$DKREL" "$@"
}

debug_kernel() {
	read_toolchain
	read_debug
	step_done "debug-$DKEY" && return 0
	# One debug build at a time, whichever checkout asks for it.
	exec 7>"$LAB/debug-build.lock"
	flock 7
	step_done "debug-$DKEY" && return 0
	debug_toolchain
	local tarball cfg=$DKDIR/.config debian=$ROOTFS/usr/src/linux-headers-$KREL/.config line sym t0 t1
	tarball=$(ls "$ROOTFS"/usr/src/linux-source-*.tar.xz 2>/dev/null | head -n 1)
	[ -n "$tarball" ] || die "linux-source tarball missing"
	# Unpacking and configuring have a stamp of their own: the build itself (over an hour on two
	# busy cores) resumes where an interrupted one stopped, instead of starting again.
	if ! step_done "debug-configured-$DKEY"; then
	log "debug flavour $DKREL: unpacking $(basename "$tarball") into $DKDIR_IN_ROOT"
	rm -rf "$DKDIR"
	mkdir -p "$DKDIR"
	tar -xJf "$tarball" -C "$DKDIR" --strip-components=1
	cp "$debian" "$cfg"
	grep -v '^#' "$DEBUG_DIR/modules" | awk 'NF {print $1}' >"$DKDIR/dm-rust-debug.lsmod"
	{
		dmake olddefconfig
		dmake LSMOD=dm-rust-debug.lsmod localmodconfig
	} >"$BASE/debug-config.log" 2>&1 || die "configuring the debug kernel failed, see $BASE/debug-config.log"
	# The crypto API's modules stay (device-mapper and cryptsetup load algorithms by name), then the fragment.
	{ grep -E '^CONFIG_CRYPTO_[A-Z0-9_]+=m$' "$debian"; cat "$DEBUG_DIR/config"; } >>"$cfg"
	dmake olddefconfig >>"$BASE/debug-config.log" 2>&1 || die "olddefconfig failed, see $BASE/debug-config.log"
	# Every line of the fragment, and every option the selftests need (selftests/config), must have held.
	while IFS= read -r line; do
		case $line in
		"# CONFIG_"*" is not set") grep -qxF "$line" "$cfg" || die "debug kernel: '$line' did not hold" ;;
		CONFIG_*=m) sym=${line%%=*}; grep -qE "^$sym=(m|y)$" "$cfg" || die "debug kernel: $sym is not m or y" ;;
		CONFIG_*) grep -qxF "$line" "$cfg" || die "debug kernel: '$line' did not hold ($(grep "^${line%%=*}=" "$cfg"))" ;;
		esac
	done < <(cat "$DEBUG_DIR/config" "$(dirname "$DEBUG_DIR")/../selftests/config")
	mark "debug-configured-$DKEY"
	fi
	log "building the debug kernel (nice 19, -j2, log in $BASE/debug-build.log)"
	t0=$(date +%s)
	dmake -j2 bzImage modules >>"$BASE/debug-build.log" 2>&1 ||
		die "the debug kernel build failed, see $BASE/debug-build.log"
	t1=$(date +%s)
	rm -rf "$ROOTFS/lib/modules/$DKREL"
	dmake INSTALL_MOD_PATH=/ INSTALL_MOD_STRIP=1 modules_install >>"$BASE/debug-build.log" 2>&1 ||
		die "modules_install failed, see $BASE/debug-build.log"
	cp "$DKDIR/arch/x86/boot/bzImage" "$ROOTFS/boot/vmlinuz-$DKREL"
	cp "$cfg" "$ROOTFS/boot/config-$DKREL"
	cp "$DKDIR/System.map" "$ROOTFS/boot/System.map-$DKREL"
	echo "$((t1 - t0))" >"$BASE/debug-build.seconds"
	log "debug kernel $DKREL built in $((t1 - t0))s, $(wc -l <"$DKDIR/modules.order") modules"
	mark "debug-$DKEY"
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
	if [ "$FLAVOUR" = debug ]; then
		read_debug
		cat <<-EOF
		KREL=$DKREL
		LAB=$LAB
		ROOTFS=$ROOTFS
		KDIR=$DKDIR
		KDIR_IN_ROOT=$DKDIR_IN_ROOT
		KMAKE_VARS='ARCH=x86 LLVM=-$LLVM_MAJOR'
		VNG=$LAB/venv/bin/vng
		EOF
		return
	fi
	cat <<-EOF
	KREL=$KREL
	LAB=$LAB
	ROOTFS=$ROOTFS
	KDIR=$KDIR
	KDIR_IN_ROOT=$KDIR_IN_ROOT
	GCC_CMD=$GCC_CMD
	HOSTCC=gcc-$GCC_MAJOR
	KMAKE_VARS='ARCH=x86 CROSS_COMPILE=x86_64-linux-gnu- CC=$GCC_CMD HOSTCC=gcc-$GCC_MAJOR'
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
	[ "$FLAVOUR" != debug ] || debug_kernel
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
