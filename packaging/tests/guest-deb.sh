#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# In a guest booted with module.sig_enforce=1, through OVMF with the packages' signing certificate
# in the UEFI db (so in the .platform keyring, which Debian's kernel also trusts for modules):
# installs the module package as a user would, uses it, and purges it.
#   - the kernel refuses an unsigned copy of the module and a copy signed by another key (the
#     enforcement is real: only the enrolled certificate makes the packaged module load);
#   - dpkg -i; every file is there and depmod registered the module;
#   - veritysetup opens a device: device-mapper's request for dm-verity loads dm_rust (no
#     modprobe or insmod by hand), which serves the "verity" target and reads the data back;
#   - modprobe dm_rust loads it with its dependencies and the packaged options, signature verified;
#   - dpkg --purge removes every file; modprobe dm_rust then fails, and dm-verity is the kernel's again.
# Run by scripts/check-packaging.sh through scripts/vm.sh. Writes "N passed, N failed" to stdout and
# build/packaging.result. The guest's root is a tmpfs overlay: nothing reaches the lab's root.
set -u
cd /dm-rust
KREL=$(uname -r)
DEB=$(ls build/deb/dm-rust-modules-"$KREL"_*.deb 2>/dev/null | head -n 1)
RESULT=build/packaging.result
W=$(mktemp -d)
PASS=0 FAIL=0 N=0

ok() {
	N=$((N + 1))
	if [ "$1" = 0 ]; then PASS=$((PASS + 1)); echo "ok $N - $2"; else FAIL=$((FAIL + 1)); echo "not ok $N - $2"; fi
}
# check "description" command...: passes when the command succeeds.
check() {
	local d=$1
	shift
	"$@"
	ok $? "$d"
}
# refused "description" dmesg-pattern command...: passes when the command fails and the kernel
# logged the pattern (the reason of the refusal).
refused() {
	local d=$1 pat=$2 rc
	shift 2
	local before
	before=$(dmesg | wc -l)
	"$@" 2>"$W/err"
	rc=$?
	sed 's/^/# /' "$W/err"
	dmesg | tail -n +$((before + 1)) >"$W/dmesg"
	sed 's/^/# dmesg: /' "$W/dmesg"
	[ $rc != 0 ] && grep -q "$pat" "$W/dmesg"
	ok $? "$d"
}

echo "TAP version 13"
echo "# kernel $KREL, package $DEB"
[ -n "$DEB" ] || { echo "Bail out! no module package for $KREL in build/deb (make deb)"; echo "0 passed, 1 failed" | tee "$RESULT"; exit 1; }

# --- the kernel enforces signatures and holds the certificate
check "module.sig_enforce is on" grep -qx Y /sys/module/module/parameters/sig_enforce
dpkg-deb -x "$DEB" "$W/pkg"
cert=$W/pkg/usr/share/dm-rust/signing-cert.der
subject=$(openssl x509 -inform der -in "$cert" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p')
echo "# signing certificate: $subject"
check "the signing certificate is in the .platform keyring (from the UEFI db)" \
	sh -c "keyctl show %:.platform | grep -qF '$subject'"
keyctl show %:.platform | sed 's/^/# /'

# --- negative controls: without a trusted signature the kernel refuses the module
modprobe dm-mod && modprobe dm-bufio
ko=$W/pkg/usr/lib/modules/$KREL/updates/dm_rust.ko
# The signature is appended: ... | signature | struct module_signature (12 bytes, ending with the
# signature's length, big-endian) | "~Module signature appended~\n" (28 bytes).
size=$(stat -c %s "$ko")
siglen=$(tail -c 32 "$ko" | head -c 4 | od -An -tu4 --endian=big | tr -d ' ')
check "the packaged module carries a signature" \
	sh -c "[ \"\$(tail -c 28 '$ko' | head -c 27)\" = '~Module signature appended~' ]"
head -c $((size - 40 - siglen)) "$ko" >"$W/unsigned.ko"
refused "an unsigned copy of the module is refused" "Loading of unsigned module is rejected" \
	insmod "$W/unsigned.ko"
openssl req -new -x509 -nodes -days 1 -subj "/CN=untrusted test key" -newkey rsa:2048 \
	-keyout "$W/other.key" -outform DER -out "$W/other.der" 2>/dev/null
cp "$W/unsigned.ko" "$W/other.ko"
/usr/lib/linux-kbuild-*/scripts/sign-file sha256 "$W/other.key" "$W/other.der" "$W/other.ko"
refused "a copy signed by a key not enrolled is refused" "Loading of module with unavailable key is rejected" \
	insmod "$W/other.ko"

# --- install
grep -q '^dm_rust ' /proc/modules && rmmod dm_rust
start=$(date +%s)
check "dpkg -i $(basename "$DEB")" dpkg -i "$DEB"
echo "# dpkg -i took $(( $(date +%s) - start ))s (depmod included)"
dpkg -L "dm-rust-modules-$KREL" >"$W/files"
missing=0
while read -r f; do [ -e "$f" ] || { echo "# missing: $f"; missing=1; }; done <"$W/files"
check "every file of the package is installed" [ $missing = 0 ]
check "depmod registered updates/dm_rust.ko" grep -q "^updates/dm_rust.ko:" "/lib/modules/$KREL/modules.dep"
modinfo "dm_rust" | grep -E '^(filename|signer|sig_key|sig_hashalgo|depends|vermagic):' | sed 's/^/# /'
check "the installed module is signed by the packages' key" \
	sh -c "[ \"\$(modinfo -F signer dm_rust)\" = '$subject' ]"

# --- veritysetup, with nothing loaded by hand
for m in dm_rust dm_verity; do grep -q "^$m " /proc/modules && rmmod $m; done
modprobe loop
dd if=/dev/urandom of="$W/data" bs=4096 count=256 status=none
veritysetup format "$W/data" "$W/hash" >"$W/format" 2>&1
root=$(sed -n 's/^Root hash:[[:space:]]*//p' "$W/format")
dloop=$(losetup -r -f --show "$W/data")
hloop=$(losetup -r -f --show "$W/hash")
check "veritysetup open (device-mapper requests dm-verity)" \
	veritysetup open "$dloop" rs_pkg "$hloop" "$root"
check "dm_rust was loaded by that request, the kernel's dm_verity was not" \
	sh -c "grep -q '^dm_rust ' /proc/modules && ! grep -q '^dm_verity ' /proc/modules"
check "dm_rust registered the target as \"verity\" (upstream_names=1 from modprobe.d)" \
	sh -c "dmsetup targets | grep -q '^verity ' && ! dmsetup targets | grep -q '^verity-rs '"
dmsetup table rs_pkg | sed 's/^/# /'
check "the data read through the device is the data" cmp "$W/data" /dev/mapper/rs_pkg
veritysetup close rs_pkg
losetup -d "$dloop" "$hloop"

# --- modprobe by name, dependencies resolved by the module index
rmmod dm_rust
modprobe -r dm-bufio 2>/dev/null
check "modprobe dm_rust" modprobe dm_rust
check "modprobe loaded its dependency dm_bufio" grep -q '^dm_bufio ' /proc/modules
check "the signature was verified (no E taint: $(cat /sys/module/dm_rust/taint 2>/dev/null))" \
	sh -c "! grep -q E /sys/module/dm_rust/taint"
check "dmsetup lists linear-rs and verity" sh -c "dmsetup targets | grep -q '^linear-rs ' && dmsetup targets | grep -q '^verity '"
rmmod dm_rust

# --- purge
start=$(date +%s)
check "dpkg --purge" dpkg --purge "dm-rust-modules-$KREL"
echo "# dpkg --purge took $(( $(date +%s) - start ))s"
left=0
while read -r f; do [ -d "$f" ] || [ ! -e "$f" ] || { echo "# left: $f"; left=1; }; done <"$W/files"
check "every file of the package is gone (configuration included)" \
	sh -c "[ $left = 0 ] && [ ! -e /etc/modprobe.d/dm-rust.conf ]"
check "the module index no longer has dm_rust" sh -c "! grep -q dm_rust /lib/modules/$KREL/modules.dep"
modprobe dm_rust 2>"$W/err"
rc=$?
sed 's/^/# /' "$W/err"
check "modprobe dm_rust fails: module not found" sh -c "[ $rc != 0 ] && grep -q 'not found' '$W/err'"
check "modprobe dm-verity loads the kernel's dm_verity again" \
	sh -c "modprobe dm-verity && grep -q '^dm_verity ' /proc/modules && ! grep -q '^dm_rust ' /proc/modules"

if dmesg | grep -E '\] (WARNING|BUG):|Oops|Kernel panic' >/dev/null; then
	dmesg | grep -E -A5 '\] (WARNING|BUG):|Oops|Kernel panic' | sed 's/^/# /'
	ok 1 "no kernel warning"
fi
echo "1..$N"
rm -rf "$W"
echo "$PASS passed, $FAIL failed" | tee "$RESULT"
