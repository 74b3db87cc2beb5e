// SPDX-License-Identifier: GPL-2.0

//! Mode `B`'s dirty bitmap against the kernel's dm-integrity and the host's integritysetup:
//!
//! - the record `tests/data/integrity/bitmap.*` (made in the guest by
//!   `scripts/integrity-reference.sh`): `integritysetup format -B` wrote the superblock, then
//!   the kernel's target, opened with `--bitmap-sectors-per-bit 65536`, put the bitmap in force;
//!   `integritysetup dump` of the open device shows what the kernel's resume wrote. Our resume
//!   must write the same fields from the same superblock;
//! - superblocks our resume and suspend write are read by the host's `integritysetup dump`
//!   (flags, version, log2 of blocks per bitmap bit);
//! - the bitmap's size and granularity for the kernel's constructor arithmetic, written here
//!   once more from dm-integrity.c's lines as an independent oracle, over many device sizes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dm_rust_pure::integrity_bitmap::{self, Bits, BITS_PER_BLOCK};
use dm_rust_pure::integrity_geometry::{bitmap, open, Geometry, Params};
use dm_rust_pure::integrity_superblock::{Superblock, SB_FLAG_DIRTY_BITMAP, SB_FLAG_RECALCULATING};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/integrity")
}

fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key} line"))
}

/// `integritysetup dump` of a file holding `sb` in a 4 KiB superblock area.
fn dump(sb: &Superblock, name: &str) -> Vec<(String, String)> {
    let path =
        std::env::temp_dir().join(format!("dm-rust-bitmap-{}-{name}.img", std::process::id()));
    let mut area = vec![0u8; 1 << 20];
    sb.write(&mut area).unwrap();
    fs::write(&path, &area).unwrap();
    let out = Command::new("integritysetup")
        .arg("dump")
        .arg(&path)
        .output()
        .expect("integritysetup (package cryptsetup-bin) must be installed");
    let _ = fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

fn field<'a>(d: &'a [(String, String)], k: &str) -> &'a str {
    &d.iter()
        .find(|(key, _)| key == k)
        .unwrap_or_else(|| panic!("no {k}"))
        .1
}

/// The record's superblock as formatted, its geometry and the bitmap for the table's
/// `sectors_per_bit`.
fn recorded() -> (Superblock, String, Geometry, Bits) {
    let text = fs::read_to_string(data().join("bitmap.txt")).unwrap();
    let sb = Superblock::parse(&fs::read(data().join("bitmap.sb")).unwrap()).unwrap();
    let device_sectors: u64 = value(&text, "device_sectors").parse().unwrap();
    let geo = open(&sb, None, device_sectors, 0, 7).unwrap();
    let bits = Bits::new(
        &bitmap(&geo, Some(65536)),
        u32::from(sb.log2_sectors_per_block),
    );
    (sb, text, geo, bits)
}

#[test]
fn resume_writes_the_kernels_superblock() {
    let (mut sb, text, geo, bits) = recorded();
    assert!(!sb.has(SB_FLAG_DIRTY_BITMAP), "formatted clean");
    let n = bits.bytes() as usize;
    let (mut d, mut r, mut w) = (vec![0xa5u8; n], vec![0u8; n], vec![0u8; n]);
    let p = geo.provided_data_sectors();
    let res =
        integrity_bitmap::on_resume(&mut sb, true, &bits, false, p, p, &mut d, &mut r, &mut w);
    assert!(res.write_bitmap && res.write_superblock && !res.write_empty_journal);
    // The one bit in use (60992 sectors, 65536 per bit) is cleared, the rest left as read.
    assert_eq!(d[0], 0xa4);
    assert!(d[1..].iter().all(|b| *b == 0xa5));
    sb.set_version(true, false);
    // The kernel's, as integritysetup dumped it while the device was open.
    assert_eq!(
        sb.version.to_string(),
        value(&text, "dump superblock_version"),
        "version"
    );
    assert_eq!(
        sb.log2_blocks_per_bitmap_bit.to_string(),
        value(&text, "dump log2_blocks_per_bitmap")
    );
    let ours = dump(&sb, "resumed");
    assert_eq!(field(&ours, "flags"), value(&text, "dump flags").trim());
    assert_eq!(field(&ours, "log2_blocks_per_bitmap"), "16");
    assert_eq!(field(&ours, "superblock_version"), "5");
    // The table line's sectors_per_bit is 2^(log2 of sectors per block + that).
    assert!(
        value(&text, "table").contains(&format!(" sectors_per_bit:{} ", bits.sectors_per_bit()))
    );
}

#[test]
fn suspend_clears_the_flag_and_a_crash_recalculates() {
    let (mut sb, _, geo, bits) = recorded();
    let n = bits.bytes() as usize;
    let (mut d, mut r, mut w) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
    let p = geo.provided_data_sectors();
    integrity_bitmap::on_resume(&mut sb, true, &bits, false, p, p, &mut d, &mut r, &mut w);
    // The record's device provides 60992 sectors: one bit of 65536. A write of sector 30000,
    // then a crash: the bitmap on disk has bit 0, the superblock the flag.
    assert_eq!(p, 60992);
    bits.set(&mut d, 30000, 8);
    assert_eq!(d[0], 1);
    let mut crashed = sb;
    let res = integrity_bitmap::on_resume(
        &mut crashed,
        true,
        &bits,
        false,
        p,
        p,
        &mut d,
        &mut r,
        &mut w,
    );
    assert!(!res.write_bitmap && res.write_superblock);
    assert!(crashed.has(SB_FLAG_RECALCULATING) && crashed.recalc_sector == 0);
    assert_eq!((r[0], w[0]), (1, 1));
    // The recalculation redoes the bit's sectors, and nothing once the bit is clear.
    assert_eq!(bits.recalc_part(&r, 256, 256), Some((256, 256)));
    assert_eq!(
        bits.recalc_done(p - 64, 64),
        (0, 0),
        "the last, partial bit stays"
    );
    assert_eq!(bits.recalc_part(&vec![0u8; n], 0, p), None);
    crashed.set_version(true, false);
    let dumped = dump(&crashed, "crashed");
    assert_eq!(
        field(&dumped, "flags"),
        "recalculating dirty_bitmap fix_padding fix_hmac"
    );
    // A clean suspend: the flag goes, the version stays what the features need.
    let mut clean = sb;
    clean.flags &= !SB_FLAG_DIRTY_BITMAP;
    clean.set_version(true, false);
    let dumped = dump(&clean, "clean");
    assert_eq!(field(&dumped, "flags"), "fix_padding fix_hmac");
    assert_eq!(field(&dumped, "superblock_version"), "5");
    // Without fix_padding or fix_hmac a B-mode superblock is version 3.
    let mut plain = clean;
    plain.flags = SB_FLAG_DIRTY_BITMAP;
    plain.set_version(false, false);
    assert_eq!(field(&dump(&plain, "v3"), "superblock_version"), "3");
}

/// dm-integrity.c's constructor lines for the bitmap, transcribed.
fn kernel_bitmap(geo: &Geometry, log2_spb: u32, sectors_per_bit: Option<u64>) -> (u32, u64) {
    let p: &Params = geo.params();
    let mut l: i64 = match sectors_per_bit {
        None => 15,
        Some(0) => 0,
        Some(v) => 63 - i64::from(v.leading_zeros()),
    };
    if l < i64::from(log2_spb) {
        l = i64::from(log2_spb);
    }
    let mut bits_in_journal =
        (u64::from(geo.journal().section_sectors) * u64::from(p.journal_sections)) << (9 + 3);
    if bits_in_journal > u64::from(u32::MAX) {
        bits_in_journal = u64::from(u32::MAX);
    }
    let provided = geo.provided_data_sectors();
    if bits_in_journal != 0 {
        while bits_in_journal < (provided + (1u64 << l) - 1) >> l {
            l += 1;
        }
    }
    let log2_bpb = (l - i64::from(log2_spb)) as u32;
    let n_bits = ((provided >> log2_spb) + ((1u64 << log2_bpb) - 1)) >> log2_bpb;
    (log2_bpb, n_bits.div_ceil(BITS_PER_BLOCK))
}

#[test]
fn bitmap_size_as_the_kernels_constructor() {
    let (sb, _, _, _) = recorded();
    for sectors in [20011u64, 65536, 1 << 20, 3 << 22, 1 << 31, 1 << 36] {
        for spb in [
            None,
            Some(0),
            Some(1),
            Some(8),
            Some(100_000),
            Some(1 << 24),
        ] {
            let geo = open(&sb, None, sectors, 0, 7).unwrap();
            let ours = bitmap(&geo, spb);
            let (l, blocks) = kernel_bitmap(&geo, 0, spb);
            assert_eq!(
                (ours.log2_blocks_per_bit, ours.blocks),
                (l, blocks),
                "{sectors} {spb:?}"
            );
            // Never more than the journal area holds.
            let journal = u64::from(geo.journal().section_sectors)
                * u64::from(geo.params().journal_sections)
                * 512;
            assert!(Bits::new(&ours, 0).bytes() <= journal, "{sectors} {spb:?}");
        }
    }
}
