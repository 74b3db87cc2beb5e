#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds dm_rust.ko inside the lab (the kernel's exact toolchain, the prepared kernel tree) and
# checks that it will load on the lab's kernel: every undefined symbol is exported by the kernel
# or its modules (Module.symvers), and the vermagic equals that of Debian's own modules.
# Output: build/dm_rust.ko and the tests' build/dm_rust_test_inline.ko (RAM disks with inline
# encryption, rust/test_inline/; never packaged) and build/helpers/ (selftests/*.c compiled; neither
# built with DM_RUST_TESTS empty); with FLAVOUR=debug, build/debug/dm_rust.ko against the lab's debug kernel
# (scripts/lab.sh, FLAVOUR=debug).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/lab.sh env)"
out=build${FLAVOUR:+/$FLAVOUR}

die() { printf 'build: error: %s\n' "$*" >&2; exit 1; }
# DM_RUST_TESTS= (empty) leaves the test module out (check-mutants' builds of dm_rust.ko mutants).
tests=${DM_RUST_TESTS-m}

# Build from a copy of the sources inside the root filesystem, so the repository stays clean and
# nothing needs to stay mounted in the root that the guest shares. Each checkout has its own build
# directory there; one build at a time uses the lab.
name=dm-rust-$(printf '%s' "$PWD" | md5sum | cut -c1-8)${FLAVOUR:+-$FLAVOUR}
src=$ROOTFS/build/$name
mkdir -p "$out"
exec 9>"$LAB/build.lock"
flock 9
rm -rf "$src"
mkdir -p "$src"
cp -a Kbuild include rust "$src/"
# objtool reads /proc: the build mounts it in a mount namespace of its own, where neither the guests
# sharing this root nor a `lab.sh setup` (which unmounts the root's /proc when it ends) touch it.
unshare --mount --propagation private /bin/sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' \
	"$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
	make -C "$KDIR_IN_ROOT" M="/build/$name" $KMAKE_VARS KERNELRELEASE="$KREL" DM_RUST_TESTS="$tests" -j"$(nproc)" modules
cp "$src/dm_rust.ko" "$out/dm_rust.ko"
[ -z "$tests" ] || cp "$src/dm_rust_test_inline.ko" "$out/dm_rust_test_inline.ko"
# The selftests' C helpers (selftests/*.c), with the guest's compiler: here once, rather than in
# every guest run (gcc takes ~10 s under emulation). selftests/fault_lib.sh compiles one that is
# missing or older than its source.
if [ -n "$tests" ]; then
	mkdir -p "$out/helpers" "$src/helpers"
	for c in selftests/*.c; do
		h=$(basename "$c" .c)
		cp "$c" "$src/helpers/"
		chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
			gcc -O2 -Wall -pthread -o "/build/$name/helpers/$h" "/build/$name/helpers/$h.c"
		cp "$src/helpers/$h" "$out/helpers/$h"
	done
fi

# Loadability checks (shared with the Debian packages' builds).
scripts/check-module.sh "$out/dm_rust.ko" "$KDIR/Module.symvers" "$KREL" "$ROOTFS/lib/modules/$KREL"
[ -z "$tests" ] || scripts/check-module.sh "$out/dm_rust_test_inline.ko" "$KDIR/Module.symvers" "$KREL" "$ROOTFS/lib/modules/$KREL"
