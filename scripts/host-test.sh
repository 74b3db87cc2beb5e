#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Host tests: the pure-Rust parts of the module (parsers, formats, geometry) with cargo test,
# against images made by the real veritysetup and superblocks read by the real integritysetup.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v veritysetup >/dev/null || ! command -v integritysetup >/dev/null; then
	echo "host-test: installing cryptsetup-bin (veritysetup, integritysetup)" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cryptsetup-bin >/dev/null
fi
cargo test --locked
