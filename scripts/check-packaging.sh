#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The packaging tests (make check-packaging), after make deb:
#   1. lintian on the source and both binary packages: any error fails;
#   2. a guest booted with module.sig_enforce=1, through OVMF with the module's signing certificate
#      in the UEFI db: install, use and purge the module package (packaging/tests/guest-deb.sh);
#   3. a clean trixie chroot: apt installs the DKMS package, DKMS builds, signs and installs the
#      module (packaging/tests/dkms-chroot.sh).
# Ends with "N passed, N failed" over all three; exits non-zero if any test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/lab.sh env)"
start=$(date +%s)
pass=0 fail=0

add() { # add PASS FAIL
	pass=$((pass + $1)); fail=$((fail + $2))
}

echo "# lintian"
if scripts/deb.sh lintian; then add 1 0; echo "ok - lintian: no errors"; else add 0 1; echo "not ok - lintian: errors"; fi

# The variable store: OVMF's template with the signing certificate (DER from make deb) in db.
mok_cert=${DM_RUST_MOK_CERT:-$LAB/mok/mok.pub}
vars=$LAB/mok/vars-$(md5sum <"$mok_cert" | cut -c1-8).fd
if [ ! -s "$vars" ]; then
	scripts/ovmf.sh setup # provides virt-fw-vars
	fw=$LAB/venv/bin/virt-fw-vars
	[ -x "$fw" ] || fw=$(command -v virt-fw-vars)
	openssl x509 -inform der -in "$mok_cert" -out "$LAB/mok/cert.pem"
	"$fw" -i /usr/share/OVMF/OVMF_VARS_4M.fd --add-db 6d2f0d52-9b43-4c9c-8d1e-64d5e1f1a7a3 \
		"$LAB/mok/cert.pem" -o "$vars.tmp" >"$LAB/mok/virt-fw-vars.log" 2>&1 &&
		mv "$vars.tmp" "$vars" || { echo "check-packaging: virt-fw-vars failed" >&2; exit 1; }
fi

echo "# guest: install, use and purge the module package"
rm -f build/packaging.result
gstart=$(date +%s)
VM_OVMF_VARS=$vars VM_APPEND="module.sig_enforce=1" scripts/vm.sh packaging/tests/guest-deb.sh 2>&1 |
	tee build/packaging-guest.log
echo "# guest run took $(( $(date +%s) - gstart ))s"
if [ -s build/packaging.result ]; then
	read -r p _ f _ <build/packaging.result
	add "$p" "$f"
else
	echo "not ok - the guest produced no result (see build/packaging-guest.log)"
	add 0 1
fi

echo "# clean trixie chroot: the DKMS package"
dstart=$(date +%s)
packaging/tests/dkms-chroot.sh | tee build/dkms-chroot.txt
echo "# DKMS chroot run took $(( $(date +%s) - dstart ))s"
read -r p _ f _ < <(tail -n 1 build/dkms-chroot.txt)
add "${p:-0}" "${f:-1}"

echo "# check-packaging took $(( $(date +%s) - start ))s"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
