#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the Debian packages of dm-rust in the lab, with Debian's tools (dpkg-buildpackage,
# debhelper, dh-dkms), from the checkout as it is (tracked and new files):
#   dm-rust-modules-KREL  dm_rust.ko for the lab's kernel, signed with a machine-owner key
#   dm-rust-dkms          the DKMS package
# plus the source package. Results in build/deb/. `scripts/deb.sh lintian` runs lintian on them
# and fails on any error.
#
# Signing key: DM_RUST_MOK_KEY (PEM private key) and DM_RUST_MOK_CERT (DER certificate) on this
# host; by default a key made once like Debian's DKMS makes its own, kept in $LAB/mok/.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/lab.sh env)"

log() { printf 'deb: %s\n' "$*" >&2; }
die() { printf 'deb: error: %s\n' "$*" >&2; exit 1; }

OUT=build/deb
in_root() {
	chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@"
}

# A key and certificate made as Debian's DKMS makes /var/lib/dkms/mok.key and mok.pub.
mok_key() {
	local dir=$LAB/mok
	if [ ! -s "$dir/mok.key" ] || [ ! -s "$dir/mok.pub" ]; then
		log "making the module signing key $dir/mok.key"
		mkdir -p "$dir"
		openssl req -new -x509 -nodes -days 36500 -subj "/CN=dm-rust module signing key" \
			-newkey rsa:2048 -keyout "$dir/mok.key.tmp" -outform DER -out "$dir/mok.pub.tmp" \
			2>/dev/null || die "openssl req failed"
		chmod 600 "$dir/mok.key.tmp"
		mv "$dir/mok.pub.tmp" "$dir/mok.pub"
		mv "$dir/mok.key.tmp" "$dir/mok.key"
	fi
	MOK_KEY=${DM_RUST_MOK_KEY:-$dir/mok.key}
	MOK_CERT=${DM_RUST_MOK_CERT:-$dir/mok.pub}
}

build() {
	scripts/deb-tools.sh
	mok_key
	local version arch kversion name top src gcc_major flavour
	version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version 2>/dev/null ||
		sed -n '1s/^dm-rust (\([^)]*\)).*/\1/p' packaging/debian/changelog)
	arch=$(in_root dpkg --print-architecture)
	kversion=$(in_root dpkg-query -W -f='${Version}' "linux-image-$KREL")
	gcc_major=${GCC_CMD##*-}
	flavour=${KREL##*-}
	name=deb-$(printf '%s' "$PWD" | md5sum | cut -c1-8)
	top=$ROOTFS/build/$name
	src=$top/dm-rust-$version

	exec 9>"$LAB/build.lock"
	flock 9
	rm -rf "$top"
	mkdir -p "$src"
	# The checkout's files, committed or not (the build directory and ignored files excluded).
	git ls-files -co --exclude-standard -z | grep -zv '^build/' | xargs -0 cp --parents -a -t "$src"
	cp -a packaging/debian "$src/debian"
	sed -e "s/@KREL@/$KREL/g" -e "s/@KVERSION@/$kversion/g" -e "s/@ARCH@/$arch/g" \
		-e "s/@SERIES@/$(echo "$KREL" | cut -d. -f1-2)/g" -e "s/@GCC_MAJOR@/$gcc_major/g" \
		-e "s/@FLAVOUR@/$flavour/g" packaging/debian/control.in >"$src/debian/control"
	rm "$src/debian/control.in"
	# Files of the kernel-specific package, named after it.
	local f
	for f in packaging/debian/dm-rust-modules.*; do
		sed "s/@KREL@/$KREL/g" "$f" >"$src/debian/dm-rust-modules-$KREL.${f##*.}"
		rm "$src/debian/$(basename "$f")"
	done
	mkdir -p "$top/mok"
	install -m 0600 "$MOK_KEY" "$top/mok/mok.key"
	install -m 0644 "$MOK_CERT" "$top/mok/mok.pub"

	# objtool reads /proc: mounted in a mount namespace of this build only, which neither shows
	# it to the guest that shares this root nor lets anyone unmount it during the build.
	log "dpkg-buildpackage in $src"
	local rc=0
	unshare --mount --propagation private sh -c "mount -t proc proc '$ROOTFS/proc' &&
		chroot '$ROOTFS' /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		DM_RUST_KDIR=$KDIR_IN_ROOT DM_RUST_MOK_KEY=/build/$name/mok/mok.key \
		DM_RUST_MOK_CERT=/build/$name/mok/mok.pub \
		sh -c 'cd /build/$name/dm-rust-$version && dpkg-buildpackage -us -uc -j$(nproc)'" \
		>build/deb.log 2>&1 || rc=$?
	rm -rf "$top/mok"
	[ $rc = 0 ] || { tail -n 30 build/deb.log >&2; die "dpkg-buildpackage failed, see build/deb.log"; }

	rm -rf "$OUT"
	mkdir -p "$OUT"
	cp "$top"/*.deb "$top"/*.dsc "$top"/*.tar.* "$top"/*.changes "$top"/*.buildinfo "$OUT/"
	ls -l "$OUT" >&2
}

lintian_run() {
	scripts/deb-tools.sh
	local changes
	changes=$(ls "$OUT"/*.changes 2>/dev/null | head -n 1)
	[ -n "$changes" ] || die "no packages in $OUT (make deb)"
	local dir=$ROOTFS/build/lintian-$$
	mkdir -p "$dir"
	cp "$OUT"/* "$dir/"
	local rc=0
	in_root lintian --info --display-info --fail-on error \
		"/build/lintian-$$/$(basename "$changes")" >build/lintian.log 2>&1 || rc=$?
	rm -rf "$dir"
	cat build/lintian.log
	printf 'lintian: %s errors, %s warnings, %s info\n' "$(grep -c '^E:' build/lintian.log || true)" \
		"$(grep -c '^W:' build/lintian.log || true)" "$(grep -c '^I:' build/lintian.log || true)"
	return $rc
}

case "${1:-build}" in
build) build ;;
lintian) lintian_run ;;
*) die "usage: $0 [build|lintian]" ;;
esac
