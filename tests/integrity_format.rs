// SPDX-License-Identifier: GPL-2.0

//! The dm-integrity format against references outside this project.
//!
//! 1. Layout: cryptsetup's own test suite (`tests/integrity-compat-test`) formats 32 MiB files
//!    with `integritysetup format` on a real kernel, fills the opened device with zeroes and
//!    checks the SHA-256 of the whole device against a constant. The device's size is
//!    `provided_data_sectors`, so each constant pins the number of sectors the kernel's
//!    dm-integrity provided for those parameters. Here: the digest of our
//!    `provided_data_sectors` zero sectors must be that constant.
//! 2. Superblock: the host's `integritysetup dump` (package `cryptsetup-bin`, which must be
//!    installed) reads superblocks our writer made; what it prints must be what we parsed, for
//!    every version and flag. `integritysetup format` itself needs device-mapper in the running
//!    kernel, which a host build machine may not have, so it is not used here.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use dm_rust_pure::integrity_geometry::{
    default_journal_sectors, initialize, Format, Geometry, Params,
};
use dm_rust_pure::integrity_superblock::{
    Probe, Superblock, SB_FLAG_DIRTY_BITMAP, SB_FLAG_FIXED_HMAC, SB_FLAG_FIXED_PADDING,
    SB_FLAG_HAVE_JOURNAL_MAC, SB_FLAG_INLINE, SB_FLAG_RECALCULATING,
};
use sha2::{Digest, Sha256};

/// 32 MiB: the files cryptsetup's test formats.
const DEVICE_SECTORS: u64 = 65536;

/// One `intformat`/recalculate/metadata-device case of cryptsetup's test: the parameters and the
/// SHA-256 of the opened device after zero-filling it.
struct Published {
    what: &'static str,
    tag_size: u32,
    block_size: u32,
    /// `--integrity-legacy-padding` was given (otherwise integritysetup sets `fix_padding`).
    legacy_padding: bool,
    /// `--data-device`: the file formatted is a metadata device of the same size.
    meta_device: bool,
    sha256: &'static str,
}

const PUBLISHED: &[Published] = &[
    Published {
        what: "intformat crc32c (4-byte tags, 512-byte sectors)",
        tag_size: 4,
        block_size: 512,
        legacy_padding: true,
        meta_device: false,
        sha256: "08f63eb27fb9ce2ce903b0a56429c68ce5e209253ba42154841ef045a53839d7",
    },
    Published {
        what: "intformat xxhash64 (8-byte tags)",
        tag_size: 8,
        block_size: 512,
        legacy_padding: true,
        meta_device: false,
        sha256: "6ff6bb889a8485f1fb26aa82671ff5da64f60381fc469e31d7be6094241eee09",
    },
    Published {
        what: "intformat sha1 (20-byte tags)",
        tag_size: 20,
        block_size: 512,
        legacy_padding: true,
        meta_device: false,
        sha256: "6eedd6344dab8875cd185fcd6565dfc869ab36bc57e577f40c685290b1fa7fe7",
    },
    Published {
        what: "intformat sha256 (32-byte tags)",
        tag_size: 32,
        block_size: 512,
        legacy_padding: true,
        meta_device: false,
        sha256: "8e5fe4119558e117bfc40e3b0f13ade3abe497b52604d4c7cca0cfd6c7f4cf11",
    },
    Published {
        what: "intformat sha1 --tag-size 16 --sector-size 4096",
        tag_size: 16,
        block_size: 4096,
        legacy_padding: true,
        meta_device: false,
        sha256: "e152ec88227b539cd9cafd8bdb587a1072d720cd6bcebe1398d4136c9e7f337b",
    },
    Published {
        what: "intformat sha256 --sector-size 4096",
        tag_size: 32,
        block_size: 4096,
        legacy_padding: true,
        meta_device: false,
        sha256: "33f7dfa5163ca9f740383fb8b0919574e38a7b20a94a4170fde4238196b7c4b4",
    },
    Published {
        what: "recalculate: format --no-wipe (crc32c, fix_padding)",
        tag_size: 4,
        block_size: 512,
        legacy_padding: false,
        meta_device: false,
        sha256: "08f63eb27fb9ce2ce903b0a56429c68ce5e209253ba42154841ef045a53839d7",
    },
    Published {
        what: "separate metadata device (crc32c)",
        tag_size: 4,
        block_size: 512,
        legacy_padding: false,
        meta_device: true,
        sha256: "83ee47245398adee79bd9c0a8bc57b821e92aba10f5f9ade8a5d1fae4d8c4302",
    },
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of `sectors` zero sectors.
fn zero_digest(sectors: u64) -> String {
    let mut h = Sha256::new();
    let zero = [0u8; 512];
    for _ in 0..sectors {
        h.update(zero);
    }
    hex(&h.finalize())
}

/// What integritysetup asks the kernel for when formatting with defaults: no journal size, so
/// the kernel's default; the default interleave and buffer.
fn format(tag_size: u32, block_size: u32, fix_padding: bool) -> Format {
    Format {
        tag_size,
        log2_sectors_per_block: (block_size / 512).trailing_zeros(),
        journal_sectors: default_journal_sectors(DEVICE_SECTORS),
        interleave_sectors: 0,
        journal_mac: false,
        fix_padding,
        fixed_hmac: false,
        discard_keyed: false,
        inline: false,
        bitmap_mode: false,
        start: 0,
        log2_buffer_sectors: 7,
    }
}

#[test]
fn provided_sectors_match_cryptsetups_published_checksums() {
    for case in PUBLISHED {
        let f = format(case.tag_size, case.block_size, !case.legacy_padding);
        let meta = case.meta_device.then_some(DEVICE_SECTORS);
        let formatted = initialize(&f, DEVICE_SECTORS, meta).expect(case.what);
        let sb = formatted.superblock;
        let provided = sb.provided_data_sectors;
        assert_eq!(
            zero_digest(provided),
            case.sha256,
            "{}: {provided} sectors",
            case.what
        );
        // Opening recomputes the same number from the superblock, and the layout fits.
        let params =
            Params::from_superblock(&sb, case.meta_device, 0, formatted.log2_buffer_sectors);
        let g = Geometry::new(params, provided, DEVICE_SECTORS).expect(case.what);
        assert_eq!(
            dm_rust_pure::integrity_geometry::provided_data_sectors(
                params,
                DEVICE_SECTORS,
                DEVICE_SECTORS
            ),
            provided,
            "{}",
            case.what
        );
        if !case.meta_device {
            assert!(g.data_sector(provided - 1).unwrap() < DEVICE_SECTORS);
        }
    }
}

/// A scratch directory for this test binary.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("integrity")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `integritysetup dump` of a file: the key/value lines it prints.
fn dump(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let out = Command::new("integritysetup")
        .arg("dump")
        .arg(path)
        .output()
        .expect("integritysetup (package cryptsetup-bin) must be installed");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect())
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The flag names integritysetup prints, in its order.
const FLAG_NAMES: &[(u32, &str)] = &[
    (SB_FLAG_HAVE_JOURNAL_MAC, "have_journal_mac"),
    (SB_FLAG_RECALCULATING, "recalculating"),
    (SB_FLAG_DIRTY_BITMAP, "dirty_bitmap"),
    (SB_FLAG_FIXED_PADDING, "fix_padding"),
    (SB_FLAG_FIXED_HMAC, "fix_hmac"),
    (SB_FLAG_INLINE, "inline"),
];

#[test]
fn integritysetup_reads_our_superblocks() {
    let dir = scratch("dump");
    let mut cases = Vec::new();
    for (tag, block) in [
        (4u32, 512u32),
        (32, 512),
        (8, 4096),
        (20, 1024),
        (255, 2048),
    ] {
        for fix_padding in [false, true] {
            for meta in [None, Some(16384u64)] {
                let mut f = format(tag, block, fix_padding);
                f.journal_mac = tag == 32;
                f.fixed_hmac = tag == 255;
                f.bitmap_mode = block == 1024;
                cases.push(initialize(&f, DEVICE_SECTORS, meta).unwrap().superblock);
            }
        }
    }
    // Superblocks as the kernel leaves them later: recalculating, a dirty bitmap, inline.
    let base = cases[0];
    let mut recalc = base;
    recalc.flags |= SB_FLAG_RECALCULATING;
    recalc.recalc_sector = 123_456;
    recalc.set_version(false, false);
    let mut dirty = base;
    dirty.flags |= SB_FLAG_DIRTY_BITMAP;
    dirty.log2_blocks_per_bitmap_bit = 15;
    dirty.set_version(true, false);
    let mut inline = base;
    inline.flags = SB_FLAG_INLINE | SB_FLAG_FIXED_HMAC;
    inline.journal_sections = 0;
    inline.salt = *b"saltsaltsaltsalt";
    inline.set_version(false, false);
    let mut keyed = base;
    keyed.flags |= dm_rust_pure::integrity_superblock::SB_FLAG_DISCARD_KEYED;
    keyed.set_version(false, false);
    cases.extend([recalc, dirty, inline, keyed]);

    let mut versions = std::collections::BTreeSet::new();
    let mut unknown_to_integritysetup = std::collections::BTreeSet::new();
    for (i, sb) in cases.iter().enumerate() {
        let path = dir.join(format!("sb{i}.img"));
        versions.insert(sb.version);
        let mut image = vec![0u8; 8 * 512];
        sb.write(&mut image).unwrap();
        fs::write(&path, &image).unwrap();
        let fields = match dump(&path) {
            Ok(fields) => fields,
            // An integritysetup older than the kernel refuses the newest versions (2.6 knows 1
            // to 5, 2.7 1 to 6; the 7.3 kernel writes 7 for keyed discards).
            Err(e)
                if e.contains(&format!("metadata (version {})", sb.version)) && sb.version >= 6 =>
            {
                unknown_to_integritysetup.insert(sb.version);
                assert_eq!(Superblock::parse(&image), Ok(*sb));
                continue;
            }
            Err(e) => panic!("{sb:?}: {e}"),
        };
        let get = |k: &str| field(&fields, k).unwrap_or_else(|| panic!("{k} in {fields:?}"));

        // Our parser, from the same bytes.
        let ours = match dm_rust_pure::integrity_superblock::probe(&image).unwrap() {
            Probe::Superblock(sb) => sb,
            Probe::Blank => panic!("blank"),
        };
        assert_eq!(ours, *sb);
        assert_eq!(ours.to_bytes()[..], image[..64]);

        assert_eq!(get("superblock_version"), ours.version.to_string());
        assert_eq!(
            get("log2_interleave_sectors"),
            ours.log2_interleave_sectors.to_string()
        );
        assert_eq!(
            get("integrity_tag_size"),
            ours.integrity_tag_size.to_string()
        );
        assert_eq!(get("journal_sections"), ours.journal_sections.to_string());
        assert_eq!(
            get("provided_data_sectors"),
            ours.provided_data_sectors.to_string()
        );
        assert_eq!(
            get("sector_size"),
            (512u32 << ours.log2_sectors_per_block).to_string()
        );
        assert_eq!(
            get("log2_blocks_per_bitmap"),
            ours.log2_blocks_per_bitmap_bit.to_string()
        );
        if ours.has(SB_FLAG_RECALCULATING) {
            assert_eq!(get("recalc_sector"), ours.recalc_sector.to_string());
        }
        let want: Vec<&str> = FLAG_NAMES
            .iter()
            .filter(|(bit, _)| ours.has(*bit))
            .map(|(_, name)| *name)
            .collect();
        let got: Vec<&str> = field(&fields, "flags")
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(got, want, "{ours:?}");
    }
    // Every version was written, and each one integritysetup knows was compared.
    assert_eq!(
        versions.iter().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert!(unknown_to_integritysetup.iter().all(|v| *v >= 6));
    eprintln!(
        "versions compared with integritysetup dump: {:?}",
        versions
            .difference(&unknown_to_integritysetup)
            .collect::<Vec<_>>()
    );
}

#[test]
fn damaged_superblocks_are_refused_by_both() {
    let dir = scratch("damaged");
    let good = initialize(&format(4, 512, true), DEVICE_SECTORS, None)
        .unwrap()
        .superblock;
    let mut bytes = vec![0u8; 4096];
    good.write(&mut bytes).unwrap();
    let damage: &[(&str, usize, u8)] =
        &[("magic", 0, b'I'), ("version 0", 8, 0), ("version 8", 8, 8)];
    for (what, at, value) in damage {
        let mut b = bytes.clone();
        b[*at] = *value;
        let path = dir.join(format!("{what}.img"));
        fs::write(&path, &b).unwrap();
        assert!(dump(&path).is_err(), "integritysetup accepted {what}");
        assert!(Superblock::parse(&b).is_err(), "we accepted {what}");
    }
}
