#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Host tests: the pure-Rust parts of the module (parsers, formats, geometry) with cargo test,
# against images made by the real veritysetup, superblocks read by the real integritysetup and
# ciphertext made by OpenSSL.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v veritysetup >/dev/null || ! command -v integritysetup >/dev/null; then
	echo "host-test: installing cryptsetup-bin (veritysetup, integritysetup)" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cryptsetup-bin >/dev/null
fi
# The dm-crypt known-answer test takes its reference from OpenSSL: the openssl command and
# python3-cryptography.
has_cryptography() {
	local py
	for py in python3 /usr/bin/python3; do
		"$py" -c 'import cryptography' 2>/dev/null && return 0
	done
	return 1
}
if ! command -v openssl >/dev/null || ! has_cryptography; then
	echo "host-test: installing openssl and python3-cryptography" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl python3-cryptography >/dev/null
fi
cargo test --locked
