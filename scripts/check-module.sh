#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Checks that a built module will load on a kernel: every undefined symbol is exported by the
# kernel or its modules (the kernel's Module.symvers), and its vermagic equals that of the kernel's
# own dm-mod module (or, when the kernel's modules are not installed, starts with the release).
# Used by scripts/build.sh (the lab), debian/rules and the DKMS build.
#
# Usage: check-module.sh MODULE.ko MODULE.SYMVERS KREL [MODULES_DIR]
#   MODULES_DIR  the kernel's /lib/modules/KREL (default /lib/modules/KREL)
set -euo pipefail

die() { printf 'check-module: error: %s\n' "$*" >&2; exit 1; }
[ $# -ge 3 ] || die "usage: $0 MODULE.ko MODULE.SYMVERS KREL [MODULES_DIR]"
ko=$1 symvers=$2 krel=$3 moddir=${4:-/lib/modules/$3}
[ -f "$ko" ] || die "$ko missing"
[ -f "$symvers" ] || die "$symvers missing"
# An installed module may be compressed (DKMS compresses like the kernel's modules).
case "$ko" in
*.xz | *.zst | *.gz)
	tmp=$(mktemp --suffix=.ko)
	trap 'rm -f "$tmp"' EXIT
	case "$ko" in
	*.xz) xz -dc "$ko" ;;
	*.zst) zstd -qdc "$ko" ;;
	*.gz) gzip -dc "$ko" ;;
	esac >"$tmp" || die "cannot decompress $ko"
	shown=$ko ko=$tmp
	;;
esac

missing=$(nm -u "$ko" | awk '{print $2}' | sort -u |
	comm -23 - <(awk '{print $2}' "$symvers" | sort -u))
[ -z "$missing" ] || die "symbols not exported by $krel: $(echo $missing)"
ours=$(modinfo -F vermagic "$ko")
ref_mod=$(find "$moddir/kernel/drivers/md" -name 'dm-mod.ko*' 2>/dev/null | head -n 1) || true
if [ -n "$ref_mod" ]; then
	ref=$(modinfo -F vermagic "$ref_mod")
	[ "$ours" = "$ref" ] || die "vermagic '$ours' differs from the kernel's modules ('$ref')"
else
	case "$ours" in
	"$krel "*) ;;
	*) die "vermagic '$ours' is not for $krel" ;;
	esac
fi
printf 'check-module: %s (%s bytes), vermagic "%s", all %s undefined symbols exported by %s\n' \
	"${shown:-$ko}" "$(stat -c %s "$ko")" "$ours" "$(nm -u "$ko" | wc -l)" "$krel"
