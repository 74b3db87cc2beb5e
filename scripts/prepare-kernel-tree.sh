#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Prepares a kernel tree that a Rust module can be built against, for one Debian kernel release,
# on the system that runs it (the lab's root filesystem through chroot, or the user's system from
# DKMS). Debian's linux-headers package has no Rust metadata (rust/*.rmeta, libmacros.so); this
# regenerates it from the linux-source package with the toolchain the kernel was built with:
#
#   1. read that toolchain from the headers' .config (CONFIG_RUSTC_VERSION_TEXT,
#      CONFIG_BINDGEN_VERSION_TEXT, CONFIG_CC_VERSION_TEXT) and check that the installed rustc,
#      rust-src, bindgen and gcc are exactly those; otherwise stop and name the package to install;
#   2. unpack linux-source, copy Debian's .config, olddefconfig, and check with cmp that the
#      configuration is unchanged (a different toolchain would change it);
#   3. modules_prepare (builds the Rust metadata), copy Debian's Module.symvers, link vmlinux (BTF).
#
# Usage: prepare-kernel-tree.sh check KREL         check the toolchain and sources only
#        prepare-kernel-tree.sh prepare KREL DIR   prepare the tree in DIR (reused when complete)
#        prepare-kernel-tree.sh key KREL           print the toolchain key (names cache directories)
#        prepare-kernel-tree.sh makevars KREL      print the make variables that match Debian's build
# Environment: HEADERS (default /usr/src/linux-headers-KREL), SOURCE (default the linux-source
# tarball of KREL's version under /usr/src), JOBS (default nproc).
set -euo pipefail

PROG=prepare-kernel-tree
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 check|prepare|key|makevars KREL [DIR]"
CMD=$1
KREL=$2
HEADERS=${HEADERS:-/usr/src/linux-headers-$KREL}
CFG=$HEADERS/.config
# 7.3.4+deb13-amd64 -> 7.3
SERIES=$(echo "$KREL" | cut -d. -f1-2)
SOURCE=${SOURCE:-/usr/src/linux-source-$SERIES.tar.xz}
JOBS=${JOBS:-$(nproc)}

[ -f "$CFG" ] || die "$CFG missing: install the package linux-headers-$KREL"
grep -qx 'CONFIG_RUST=y' "$CFG" || die "kernel $KREL is not built with Rust (CONFIG_RUST is not set)"

config_value() { sed -n "s/^$1=\"\(.*\)\"$/\1/p" "$CFG"; }
RUSTC_TEXT=$(config_value CONFIG_RUSTC_VERSION_TEXT)
BINDGEN_TEXT=$(config_value CONFIG_BINDGEN_VERSION_TEXT)
CC_TEXT=$(config_value CONFIG_CC_VERSION_TEXT)
RUSTC_UP=$(echo "$RUSTC_TEXT" | awk '{print $2}')
BINDGEN_UP=$(echo "$BINDGEN_TEXT" | awk '{print $2}')
# "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0": the command, and the Debian version in parentheses.
GCC_CMD=$(echo "$CC_TEXT" | awk '{print $1}')
GCC_DEB=$(echo "$CC_TEXT" | sed -n 's/.*(Debian \([^)]*\)).*/\1/p')
GCC_MAJOR=${GCC_CMD##*-}
[ -n "$RUSTC_UP" ] && [ -n "$BINDGEN_UP" ] && [ -n "$GCC_DEB" ] ||
	die "cannot read the toolchain versions from $CFG"
TOOLKEY="rustc-$RUSTC_UP-bindgen-$BINDGEN_UP-gcc-$GCC_DEB"
case $(sed -n 's/^CONFIG_\(X86_64\|ARM64\)=y$/\1/p' "$CFG" | head -n 1) in
X86_64) ARCH=x86 ;;
ARM64) ARCH=arm64 ;;
*) die "unsupported architecture in $CFG" ;;
esac
CROSS=${GCC_CMD%gcc-*}

makevars() {
	printf '%s\n' "ARCH=$ARCH" "CROSS_COMPILE=$CROSS" "CC=$GCC_CMD" "HOSTCC=gcc-$GCC_MAJOR" \
		"KERNELRELEASE=$KREL"
}

# Debian version of an installed package, empty if not installed (or no dpkg).
installed() { dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$1" 2>/dev/null | sed -n 's/^ii *//p'; }

# The Debian version of $1 whose upstream part is $2, as a hint for messages (needs apt lists).
hint() {
	local v
	v=$(apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
		grep -E "^([0-9]+:)?${2//./\\.}([+~-]|$)" | head -n 1) || true
	if [ -n "$v" ]; then echo "$1=$v"; else echo "$1 (upstream version $2)"; fi
}

check() {
	local have problems=()
	have=$(rustc --version 2>/dev/null || true)
	if [ "$have" != "$RUSTC_TEXT" ]; then
		problems+=("rustc: the kernel was built with '$RUSTC_TEXT', this system has '${have:-no rustc}'; install $(hint rustc "$RUSTC_UP") with rust-src and libstd-rust-dev of the same version")
	else
		local sysroot
		sysroot=$(rustc --print sysroot)
		[ -f "$sysroot/lib/rustlib/src/rust/library/core/src/lib.rs" ] ||
			problems+=("rust-src: the Rust standard library sources are missing; install rust-src=$(installed rustc)")
		if command -v dpkg-query >/dev/null && [ -n "$(installed rustc)" ] &&
			[ "$(installed rust-src)" != "$(installed rustc)" ]; then
			problems+=("rust-src: version '$(installed rust-src)' differs from rustc '$(installed rustc)'; install rust-src=$(installed rustc)")
		fi
	fi
	have=$(bindgen --version 2>/dev/null || true)
	[ "$have" = "$BINDGEN_TEXT" ] ||
		problems+=("bindgen: the kernel was built with '$BINDGEN_TEXT', this system has '${have:-no bindgen}'; install $(hint bindgen "$BINDGEN_UP")")
	have=$("$GCC_CMD" --version 2>/dev/null | head -n 1 || true)
	[ "$have" = "$CC_TEXT" ] ||
		problems+=("gcc: the kernel was built with '$CC_TEXT', this system has '${have:-no $GCC_CMD}'; install $(hint "gcc-$GCC_MAJOR" "$GCC_DEB")")
	# The other tools modules_prepare needs, with the package that has each.
	local tool
	for tool in make:make python3:python3 flex:flex bison:bison bc:bc pahole:dwarves \
		xz:xz-utils perl:perl openssl:openssl; do
		command -v "${tool%%:*}" >/dev/null || problems+=("${tool%%:*} is missing; install ${tool#*:}")
	done
	[ -f /usr/include/gelf.h ] || problems+=("libelf headers are missing; install libelf-dev")
	[ -f /usr/include/openssl/opensslv.h ] || problems+=("OpenSSL headers are missing; install libssl-dev")
	if [ ! -f "$SOURCE" ]; then
		problems+=("$SOURCE missing; install linux-source-$SERIES=$(installed "linux-headers-$KREL")")
	elif command -v dpkg-query >/dev/null && [ -n "$(installed "linux-headers-$KREL")" ] &&
		[ "$(installed "linux-source-$SERIES")" != "$(installed "linux-headers-$KREL")" ]; then
		problems+=("linux-source-$SERIES is version '$(installed "linux-source-$SERIES")' but the kernel is '$(installed "linux-headers-$KREL")'; install linux-source-$SERIES=$(installed "linux-headers-$KREL")")
	fi
	[ -f "$HEADERS/Module.symvers" ] || problems+=("$HEADERS/Module.symvers missing; reinstall linux-headers-$KREL")
	if [ ${#problems[@]} -gt 0 ]; then
		local p
		for p in "${problems[@]}"; do log "$p"; done
		die "cannot build Rust modules for $KREL (see above)"
	fi
}

prepare() {
	local dir=$1 stamp=$1/.dm-rust-prepared want
	want="$KREL $TOOLKEY $(md5sum <"$CFG" | cut -c1-32) $(stat -c %s "$SOURCE")"
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		log "$dir is prepared for $KREL"
		return 0
	fi
	log "unpacking $(basename "$SOURCE") into $dir"
	rm -rf "$dir"
	mkdir -p "$dir"
	tar -xJf "$SOURCE" -C "$dir" --strip-components=1
	cp "$CFG" "$dir/.config"
	local vars
	mapfile -t vars < <(makevars)
	make -s -C "$dir" "${vars[@]}" olddefconfig </dev/null >/dev/null
	cmp -s "$dir/.config" "$CFG" ||
		die "the regenerated .config differs from Debian's: the toolchain does not match the kernel's"
	log "modules_prepare (regenerates the Rust metadata; a few minutes)"
	make -C "$dir" "${vars[@]}" -j"$JOBS" modules_prepare </dev/null >"$dir/.dm-rust-modules_prepare.log" 2>&1 ||
		{ tail -n 20 "$dir/.dm-rust-modules_prepare.log" >&2; die "modules_prepare failed, see $dir/.dm-rust-modules_prepare.log"; }
	[ -f "$dir/rust/libkernel.rmeta" ] || die "modules_prepare built no Rust metadata (rust/libkernel.rmeta)"
	cp "$HEADERS/Module.symvers" "$dir/Module.symvers"
	# Module BTF is generated against the kernel's vmlinux when the tree has one.
	local vml
	for vml in "$HEADERS/vmlinux" "/usr/lib/debug/boot/vmlinux-$KREL"; do
		[ -e "$vml" ] && ln -sf "$vml" "$dir/vmlinux" && break
	done
	echo "$want" >"$stamp"
	log "prepared $dir"
}

case $CMD in
check) check ;;
prepare)
	[ $# -ge 3 ] || die "usage: $0 prepare KREL DIR"
	check
	mkdir -p "$(dirname "$3")"
	exec 7>"$3.lock"
	flock 7
	prepare "$3"
	;;
key) echo "$TOOLKEY" ;;
makevars) makevars ;;
*) die "unknown command $CMD" ;;
esac
