#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs Debian's packaging tools (build-essential, debhelper, dh-dkms, dpkg-dev, lintian) into the lab's root
# filesystem, once: a stamp keyed by the package list records it. Guests boot from that root, so
# the install waits for the guest and build locks and holds them while it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/lab.sh env)"

PACKAGES="build-essential debhelper dh-dkms dpkg-dev lintian"
stamp=$LAB/$KREL/stamps/deb-tools-$(printf '%s' "$PACKAGES" | md5sum | cut -c1-8)
[ -e "$stamp" ] && exit 0

exec 8>"$LAB/guest.lock" 9>"$LAB/build.lock"
flock 8
flock 9
echo "deb-tools: installing $PACKAGES into the lab" >&2
chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
	DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null ||
	{ echo "deb-tools: error: apt-get install $PACKAGES failed" >&2; exit 1; }
chroot "$ROOTFS" apt-get clean
touch "$stamp"
