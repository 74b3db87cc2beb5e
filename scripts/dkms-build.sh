#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# DKMS build step of dm-rust (dkms.conf: MAKE), run in DKMS's build directory:
#   1. prepare (or reuse) a kernel tree with the Rust metadata for KREL, under /var/lib/dm-rust/KREL,
#      from linux-source with the kernel's own toolchain (scripts/prepare-kernel-tree.sh: it stops and
#      names the package to install when a tool or the source does not match);
#   2. build dm_rust.ko against it;
#   3. check that every undefined symbol is exported by KREL and the vermagic matches its modules.
# DKMS then signs the module with its machine-owner key and installs it.
#
# Usage: dkms-build.sh KREL [HEADERS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 KREL [HEADERS_DIR]" >&2; exit 2; }
krel=$1
export HEADERS=${2:-/usr/src/linux-headers-$krel}
cache=${DM_RUST_CACHE:-/var/lib/dm-rust}/$krel
key=$(bash scripts/prepare-kernel-tree.sh key "$krel")
tree=$cache/$key

bash scripts/prepare-kernel-tree.sh prepare "$krel" "$tree"
# Trees prepared for this release with another toolchain are of no more use.
for old in "$cache"/*; do
	case "$old" in
	"$tree" | "$tree.lock") ;;
	*) rm -rf "$old" ;;
	esac
done

mapfile -t vars < <(bash scripts/prepare-kernel-tree.sh makevars "$krel")
make -C "$tree" M="$PWD" "${vars[@]}" -j"$(nproc)" modules
bash scripts/check-module.sh dm_rust.ko "$tree/Module.symvers" "$krel"
