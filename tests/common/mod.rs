// SPDX-License-Identifier: GPL-2.0

//! What the integrity host tests share: the records of the kernel's dm-integrity that
//! `scripts/integrity-reference.sh` made in the guest (`tests/data/integrity/`, or the directory
//! `INTEGRITY_RECORDS` names), and reading them.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// The records' `.txt` files, sorted; none if the directory is missing.
pub fn records() -> Vec<PathBuf> {
    let dir = std::env::var_os("INTEGRITY_RECORDS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/integrity"),
        PathBuf::from,
    );
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut txt: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    txt.sort();
    txt
}

pub fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key} line"))
}

/// Digest sizes of the hashes the records use.
pub fn digest_size(alg: &str) -> u32 {
    match alg {
        "crc32c" | "crc32" => 4,
        "sha1" => 20,
        "sha256" | "hmac(sha256)" => 32,
        other => panic!("unknown hash {other}"),
    }
}
