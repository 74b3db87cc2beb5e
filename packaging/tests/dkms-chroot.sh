#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The DKMS package on a clean Debian trixie system (a chroot of its own, not the lab's, so that
# nothing is there by accident):
#   - the kernel (image and headers of KREL) is installed from trixie-backports;
#   - the build step's toolchain check, run before the package's dependencies are there, stops
#     and names the packages to install (with the versions the kernel was built with);
#   - apt installs build/deb/dm-rust-dkms_*.deb, resolving its dependencies from Debian; DKMS builds,
#     signs and installs dm_rust.ko for KREL; `dkms status` says installed; the installed module
#     passes the symbol and vermagic check against KREL;
#   - dpkg --purge removes the module and the prepared kernel tree.
# The debootstrapped base is cached (with a stamp) under $DM_RUST_DKMS_ROOT (default
# /var/tmp/dm-rust-dkms-chroot); each run works on a fresh overlay of it, thrown away afterwards.
# Downloaded packages are kept in a cache beside it. Needs root. Prints "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/lab.sh env)"

BASE=${DM_RUST_DKMS_ROOT:-/var/tmp/dm-rust-dkms-chroot}
SUITE=${DM_RUST_SUITE:-trixie}
LOWER=$BASE/base
RUN=$BASE/run
ROOT=$RUN/root
DEB=$(ls build/deb/dm-rust-dkms_*_all.deb 2>/dev/null | head -n 1)
PASS=0 FAIL=0 N=0
LOG=build/dkms-chroot.log

log() { printf 'dkms-chroot: %s\n' "$*" >&2; }
die() { printf 'dkms-chroot: error: %s\n' "$*" >&2; echo "0 passed, 1 failed"; exit 1; }
ok() {
	N=$((N + 1))
	if [ "$1" = 0 ]; then PASS=$((PASS + 1)); echo "ok $N - $2"; else FAIL=$((FAIL + 1)); echo "not ok $N - $2"; fi
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"
[ -n "$DEB" ] || die "no dm-rust-dkms package in build/deb (make deb)"

# The mirror of the host's apt sources, as scripts/lab.sh finds it.
host_mirror() {
	{ grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
	  grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'; } |
		grep -E '/debian/?$' | head -n 1 | sed 's|/$||'
}

if [ ! -e "$BASE/stamps/base-$SUITE" ]; then
	mirror=$(host_mirror)
	[ -n "$mirror" ] || die "no Debian mirror in the host's apt sources"
	log "debootstrap $SUITE into $LOWER"
	rm -rf "$LOWER"
	mkdir -p "$LOWER" "$BASE/stamps"
	debootstrap --variant=minbase "$SUITE" "$LOWER" "$mirror" >"$BASE/debootstrap.log" 2>&1 ||
		die "debootstrap failed, see $BASE/debootstrap.log"
	printf '%s\n' "deb $mirror $SUITE main" "deb $mirror $SUITE-updates main" \
		"deb $mirror $SUITE-backports main" >"$LOWER/etc/apt/sources.list"
	touch "$BASE/stamps/base-$SUITE"
fi

rm -rf "$RUN"
mkdir -p "$RUN/upper" "$RUN/work" "$ROOT" "$BASE/archives/partial"
cp "$DEB" "$RUN/"

# Everything below runs in a mount namespace of its own: the overlay and the binds vanish with it.
inner() {
	set -uo pipefail
	mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$RUN/upper,workdir=$RUN/work" "$ROOT" || exit 1
	mount -t proc proc "$ROOT/proc"
	mount --bind /dev "$ROOT/dev"
	mount --bind "$BASE/archives" "$ROOT/var/cache/apt/archives"
	mkdir -p "$ROOT/tmp/dm-rust"
	mount --bind "$PWD" "$ROOT/tmp/dm-rust"
	cp "$RUN/$(basename "$DEB")" "$ROOT/tmp/"
	in_root() {
		chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
			DEBIAN_FRONTEND=noninteractive "$@"
	}
	local rc
	echo "# apt-get update; install the kernel $KREL (image and headers) from $SUITE-backports"
	in_root apt-get update -qq >>"$LOG" 2>&1
	in_root apt-get install -y -q --no-install-recommends \
		"linux-image-$KREL/$SUITE-backports" "linux-headers-$KREL/$SUITE-backports" >>"$LOG" 2>&1
	ok $? "the kernel $KREL installs"

	in_root bash /tmp/dm-rust/scripts/prepare-kernel-tree.sh check "$KREL" >"$RUN/check.txt" 2>&1
	rc=$?
	sed 's/^/# /' "$RUN/check.txt"
	# (gcc-N is there already: the headers depend on the kernel's compiler.)
	[ $rc != 0 ] && grep -q "install rustc=" "$RUN/check.txt" && grep -q "install bindgen=" "$RUN/check.txt" &&
		grep -q "install linux-source-" "$RUN/check.txt"
	ok $? "without the toolchain, the build step stops and names rustc, bindgen and linux-source"

	echo "# apt-get install ./$(basename "$DEB") (DKMS builds the module: several minutes)"
	local start
	start=$(date +%s)
	in_root apt-get install -y -q --no-install-recommends "/tmp/$(basename "$DEB")" >>"$LOG" 2>&1
	rc=$?
	echo "# apt-get install took $(( $(date +%s) - start ))s"
	grep -E 'dkms|dm-rust|Error|error:' "$LOG" | grep -v '^Get:' | tail -n 30 | sed 's/^/# /'
	ok $rc "apt installs dm-rust-dkms with its dependencies from Debian"

	in_root dkms status >"$RUN/status.txt" 2>&1
	sed 's/^/# dkms status: /' "$RUN/status.txt"
	grep -q "^dm-rust/.*, $KREL, .*: installed" "$RUN/status.txt"
	ok $? "dkms status: dm-rust installed for $KREL"

	local ko
	ko=$(in_root sh -c "ls /lib/modules/$KREL/updates/dkms/dm_rust.ko* 2>/dev/null" | head -n 1)
	echo "# module: ${ko:-none}"
	[ -n "$ko" ] && in_root bash /tmp/dm-rust/scripts/check-module.sh "$ko" \
		"/usr/src/linux-headers-$KREL/Module.symvers" "$KREL"
	ok $? "the installed module passes the symbol and vermagic check"

	local signer
	signer=$([ -n "$ko" ] && in_root modinfo -F signer "$ko")
	echo "# signer: ${signer:-none}"
	[ -n "$signer" ] && [ -s "$ROOT/var/lib/dkms/mok.pub" ] &&
		[ "$signer" = "$(openssl x509 -inform der -in "$ROOT/var/lib/dkms/mok.pub" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p')" ]
	ok $? "DKMS signed the module with its machine-owner key (/var/lib/dkms/mok.pub)"

	in_root modprobe -S "$KREL" --dry-run --show-depends dm_rust 2>&1 | sed 's/^/# /'
	in_root modprobe -S "$KREL" --dry-run --show-depends dm_rust 2>/dev/null | grep -q "updates/dkms/dm_rust.ko"
	ok $? "modprobe finds dm_rust (depmod ran) with its dependencies"

	du -sh "$ROOT/var/lib/dm-rust" 2>/dev/null | sed 's/^/# prepared kernel tree: /'
	in_root dpkg --purge dm-rust-dkms >>"$LOG" 2>&1
	ok $? "dpkg --purge dm-rust-dkms"
	[ -z "$(in_root sh -c "ls /lib/modules/$KREL/updates/dkms/dm_rust.ko* 2>/dev/null")" ] &&
		[ ! -e "$ROOT/var/lib/dm-rust" ] && [ ! -e "$ROOT/usr/src/dm-rust-"* ] &&
		[ ! -e "$ROOT/etc/modprobe.d/dm-rust.conf" ]
	ok $? "purge removed the module, its sources, the prepared tree and the modprobe.d file"
	echo "$PASS $FAIL $N" >"$RUN/counts"
}

: >"$LOG"
export -f inner ok
export LOWER RUN ROOT BASE KREL SUITE DEB LOG PASS FAIL N
unshare --mount --propagation private bash -c inner
read -r PASS FAIL N <"$RUN/counts" 2>/dev/null || { PASS=0; FAIL=1; }
rm -rf "$RUN"
echo "1..$N"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
