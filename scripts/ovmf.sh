#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# UEFI firmware for guests that need trusted keys: a self-signed RSA test certificate and key, and
# an OVMF variable store whose db holds that certificate. A guest booted through OVMF with it (Secure
# Boot stays off) loads the certificate into its .platform keyring, which IPE (policy signatures)
# and dm-verity (root_hash_sig_key_desc) trust. Made once and cached under $LAB/ovmf; the
# certificate and key are also copied to build/ovmf/ so that guests see them at /dm-rust/build/ovmf.
#
# Usage: scripts/ovmf.sh [setup|vars|cert|key]
#   setup  make (or check) the certificate, key and variable store; prints nothing (default)
#   vars   print the path of a fresh copy of the variable store, for one boot (OVMF writes to it)
#   cert   print the path of the certificate (PEM) in build/ovmf/
#   key    print the path of the private key (PEM) in build/ovmf/
#
# Environment: DM_RUST_LAB (cache, default /var/tmp/dm-rust-lab), OVMF_VARS_TEMPLATE (default
# /usr/share/OVMF/OVMF_VARS_4M.fd, from the host package ovmf).
set -euo pipefail
cd "$(dirname "$0")/.."

LAB=${DM_RUST_LAB:-/var/tmp/dm-rust-lab}
DIR=$LAB/ovmf
TEMPLATE=${OVMF_VARS_TEMPLATE:-/usr/share/OVMF/OVMF_VARS_4M.fd}
VENV=$LAB/venv
BUILD=$PWD/build/ovmf
# The owner GUID recorded with the db entry (any GUID will do; this one is ours).
OWNER_GUID=6d2f0d52-9b43-4c9c-8d1e-64d5e1f1a7a3

log() { printf 'ovmf: %s\n' "$*" >&2; }
die() { printf 'ovmf: error: %s\n' "$*" >&2; exit 1; }

virt_fw_vars() {
	if [ -x "$VENV/bin/virt-fw-vars" ]; then
		echo "$VENV/bin/virt-fw-vars"
	elif command -v virt-fw-vars >/dev/null; then
		command -v virt-fw-vars
	else
		[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" || die "cannot make the venv $VENV"
		log "installing virt-firmware into $VENV"
		"$VENV/bin/pip" install -q "virt-firmware==26.10" >&2 || die "pip install virt-firmware failed"
		echo "$VENV/bin/virt-fw-vars"
	fi
}

setup() {
	[ -f "$TEMPLATE" ] || die "$TEMPLATE missing (host package ovmf)"
	mkdir -p "$DIR"
	if [ ! -s "$DIR/cert.pem" ] || [ ! -s "$DIR/key.pem" ]; then
		log "making the test certificate"
		openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -sha256 \
			-subj "/CN=dm-rust test key/O=dm-rust selftests" \
			-addext "keyUsage=digitalSignature" -addext "extendedKeyUsage=codeSigning" \
			-keyout "$DIR/key.pem.tmp" -out "$DIR/cert.pem.tmp" 2>/dev/null ||
			die "openssl req failed"
		openssl x509 -in "$DIR/cert.pem.tmp" -outform der -out "$DIR/cert.der"
		mv "$DIR/key.pem.tmp" "$DIR/key.pem"
		mv "$DIR/cert.pem.tmp" "$DIR/cert.pem"
		rm -f "$DIR/vars.fd"
	fi
	if [ ! -s "$DIR/vars.fd" ] || [ "$TEMPLATE" -nt "$DIR/vars.fd" ]; then
		log "making the variable store with the certificate in db"
		"$(virt_fw_vars)" -i "$TEMPLATE" --add-db "$OWNER_GUID" "$DIR/cert.pem" \
			-o "$DIR/vars.fd.tmp" >"$DIR/virt-fw-vars.log" 2>&1 ||
			die "virt-fw-vars failed, see $DIR/virt-fw-vars.log"
		mv "$DIR/vars.fd.tmp" "$DIR/vars.fd"
	fi
	mkdir -p "$BUILD"
	local f
	for f in cert.pem cert.der key.pem; do
		cmp -s "$DIR/$f" "$BUILD/$f" || cp "$DIR/$f" "$BUILD/$f"
	done
}

case "${1:-setup}" in
setup)
	setup
	;;
vars)
	setup
	# One copy per boot; old copies of earlier boots are removed after a day.
	find "$DIR" -maxdepth 1 -name 'vars.boot.*' -mmin +1440 -delete 2>/dev/null || true
	copy=$(mktemp "$DIR/vars.boot.XXXXXX")
	cp "$DIR/vars.fd" "$copy"
	echo "$copy"
	;;
cert)
	setup
	echo "$BUILD/cert.pem"
	;;
key)
	setup
	echo "$BUILD/key.pem"
	;;
*)
	die "usage: $0 [setup|vars|cert|key]"
	;;
esac
