// SPDX-License-Identifier: GPL-2.0

//! Formatting a blank device (`integrity_format`) against what the kernel's dm-integrity wrote.
//!
//! 1. Superblocks: `tests/data/integrity/<case>.sb` is the superblock area (8 sectors) that
//!    `integritysetup format` left on a zeroed device of `device_sectors` sectors in the guest
//!    (`scripts/integrity-reference.sh`; the kernel's constructor formats with the temporary
//!    table integritysetup loads). For every record, the table line integritysetup formats with
//!    is rebuilt from the format options in `<case>.txt` (the hash and keys as the kernel's
//!    table line shows them), our superblock area is computed from that line and the device's
//!    size alone, and compared with the kernel's byte for byte; only the salt, which the kernel
//!    drew at random with `fix_hmac`, is taken from the record (and with a journal MAC the
//!    superblock's MAC, computed here with the record's key over our bytes, must match too).
//! 2. The initial journal: every sector formatting writes, read back by `integrity_journal`'s
//!    reader as a resume reads it: one commit sequence (0) everywhere, every entry unused, an
//!    empty, whole journal that no mode replays or erases.

use std::fs;

mod common;

use common::{digest_size, records, value};
use dm_rust_pure::args::Args;
use dm_rust_pure::integrity_format::{
    needs_salt, new_superblock, AREA_BYTES, CANNOT_INITIALIZE, INITIAL_COMMIT_SEQ,
};
use dm_rust_pure::integrity_geometry::{open, JournalShape, JOURNAL_BLOCK_SECTORS};
use dm_rust_pure::integrity_journal::{self as journal, Action, Plan, Scan};
use dm_rust_pure::integrity_superblock::{
    superblock_mac_range, Superblock, SB_FLAG_FIXED_HMAC, SB_FLAG_FIXED_PADDING,
    SB_FLAG_HAVE_JOURNAL_MAC, SB_FLAG_RECALCULATING,
};
use dm_rust_pure::integrity_table::{IntegrityTable, HMAC_RECALCULATE_REFUSED};
use sha2::{Digest, Sha256};

/// Debian's kernel tick rate.
const HZ: u32 = 250;

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The table line `integritysetup format` loads for a record: the format options (mode, journal
/// size, interleave, padding, HMAC fix), with the tag size, block size, hash, journal MAC and
/// metadata device as the kernel's own table line for that device shows them.
fn format_line(text: &str) -> String {
    let fmt: Vec<&str> = value(text, "format").split_whitespace().collect();
    let has = |o: &str| fmt.contains(&o);
    let arg = |o: &str| fmt.windows(2).find(|w| w[0] == o).map(|w| w[1]);
    let table: Vec<&str> = value(text, "table").split(' ').collect();
    let kept = |prefix: &str| table[8..].iter().find(|w| w.starts_with(prefix)).copied();
    let mut opts: Vec<String> = Vec::new();
    match value(text, "journal_request") {
        "0" => {}
        n => opts.push(format!("journal_sectors:{n}")),
    }
    if let Some(n) = arg("--interleave-sectors") {
        opts.push(format!("interleave_sectors:{n}"));
    }
    for p in [
        "meta_device:",
        "block_size:",
        "internal_hash:",
        "journal_mac:",
    ] {
        if let Some(w) = kept(p) {
            opts.push(w.to_string());
        }
    }
    if !has("--integrity-legacy-padding") {
        opts.push("fix_padding".into());
    }
    if !has("--integrity-legacy-hmac") {
        opts.push("fix_hmac".into());
    }
    let mode = if has("-B") { "B" } else { "J" };
    // A one-sector mapping, as integritysetup's temporary device.
    format!(
        "7:0 0 {} {mode} {} {}",
        table[5],
        opts.len(),
        opts.join(" ")
    )
}

fn parse(line: &'static str) -> IntegrityTable<'static> {
    let words: Vec<&'static [u8]> = line.split(' ').map(str::as_bytes).collect();
    let words: &'static [&'static [u8]] = Box::leak(words.into_boxed_slice());
    let mut args = Args::new(words);
    let t = IntegrityTable::parse(&mut args, HZ).unwrap_or_else(|e| panic!("{line}: {e:?}"));
    assert!(args.is_empty(), "{line}");
    t
}

fn tag_size(t: &IntegrityTable<'_>) -> u32 {
    let digest = t.internal_hash().map(|a| digest_size(a.alg()));
    t.check(digest).unwrap()
}

/// Our superblock area for a record, the kernel's salt (and MAC) filled in.
fn ours_for(text: &str, kernel: &[u8]) -> (Vec<u8>, Superblock) {
    let line = format_line(text);
    let leaked: &'static str = Box::leak(line.clone().into_boxed_str());
    let t = parse(leaked);
    let device_sectors: u64 = value(text, "device_sectors").parse().unwrap();
    let meta = match value(text, "meta_sectors") {
        "0" => None,
        n => Some(n.parse().unwrap()),
    };
    let mut sb = new_superblock(&t, tag_size(&t), device_sectors, meta)
        .unwrap_or_else(|e| panic!("{line}: {e:?}"));
    if needs_salt(&sb) {
        // The kernel's random salt: the only bytes not computed here.
        sb.salt.copy_from_slice(&kernel[48..64]);
    } else {
        assert_eq!(sb.salt, [0; 16]);
    }
    // The area the module writes: the blank one it read (all zero), the superblock at its start.
    let mut area = vec![0u8; AREA_BYTES];
    sb.write(&mut area).unwrap();
    if let Some(mac) = t.journal_mac().filter(|_| sb.has(SB_FLAG_FIXED_HMAC)) {
        assert_eq!(mac.alg(), "hmac(sha256)");
        let key_hex = line.split("journal_mac:hmac(sha256):").nth(1).unwrap();
        let key = unhex(key_hex.split(' ').next().unwrap());
        let range = superblock_mac_range(32).unwrap();
        let digest = hmac_sha256(&key, &area[..range.start]);
        area[range].copy_from_slice(&digest);
    }
    (area, sb)
}

#[test]
fn superblocks_equal_the_kernels_format() {
    let records = records();
    assert!(
        records.len() >= 13,
        "records missing in tests/data/integrity"
    );
    for record in &records {
        let name = record.file_stem().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(record).unwrap();
        let kernel = fs::read(record.with_extension("sb")).unwrap();
        assert_eq!(kernel.len(), AREA_BYTES, "{name}");
        let (ours, sb) = ours_for(&text, &kernel);
        if ours != kernel {
            let first = ours.iter().zip(&kernel).position(|(a, b)| a != b).unwrap();
            panic!(
                "{name}: ours differs from the kernel's at byte {first}\n ours   {:02x?}\n kernel {:02x?}\n table {}",
                &ours[..64],
                &kernel[..64],
                format_line(&text)
            );
        }
        // What `integritysetup dump` showed of the kernel's.
        assert_eq!(
            value(&text, "dump journal_sections"),
            sb.journal_sections.to_string(),
            "{name}"
        );
        eprintln!("{name}: {}", format_line(&text));
    }
}

/// A salt left out would make every fix_hmac superblock differ from the kernel's salt position
/// only: checked directly, so that a salt never drawn is caught even where the records mask it.
#[test]
fn fix_hmac_asks_for_a_salt_only_with_a_hash_or_journal_mac() {
    let sb = new_superblock(
        &parse("7:0 0 - J 2 fix_hmac internal_hash:crc32c"),
        4,
        65536,
        None,
    )
    .unwrap();
    assert!(needs_salt(&sb));
    assert_eq!(sb.version, 5);
    let sb = new_superblock(&parse("7:0 0 - J 1 internal_hash:crc32c"), 4, 65536, None).unwrap();
    assert!(!needs_salt(&sb));
    assert_eq!(sb.version, 1);
    // No internal hash nor journal MAC (tags from the layer above): fix_hmac has no effect.
    let sb = new_superblock(&parse("7:0 0 4 J 1 fix_hmac"), 4, 65536, None).unwrap();
    assert!(!needs_salt(&sb));
    assert_eq!(sb.flags, 0);
}

#[test]
fn table_options_shape_the_superblock() {
    let fmt = |line: &'static str, sectors: u64| {
        let t = parse(line);
        new_superblock(&t, tag_size(&t), sectors, None)
    };
    // Bitmap mode: version 3; its granularity from sectors_per_bit, coarsened to fit the journal.
    let sb = fmt(
        "7:0 0 - B 2 sectors_per_bit:4096 internal_hash:crc32c",
        65536,
    )
    .unwrap();
    assert_eq!((sb.version, sb.log2_blocks_per_bitmap_bit), (3, 12));
    let sb = fmt("7:0 0 - D 1 internal_hash:crc32c", 65536).unwrap();
    assert_eq!((sb.version, sb.log2_blocks_per_bitmap_bit), (1, 15));
    let sb = fmt(
        "7:0 0 - B 3 block_size:4096 sectors_per_bit:0 internal_hash:crc32c",
        65536,
    )
    .unwrap();
    assert_eq!(sb.log2_blocks_per_bitmap_bit, 0);
    // recalculate: from sector 0, version 2 (4 with fix_padding).
    let sb = fmt("7:0 0 - J 2 recalculate internal_hash:crc32c", 65536).unwrap();
    assert!(sb.has(SB_FLAG_RECALCULATING));
    assert_eq!((sb.version, sb.recalc_sector), (2, 0));
    let sb = fmt(
        "7:0 0 - D 3 recalculate fix_padding internal_hash:crc32c",
        65536,
    )
    .unwrap();
    assert_eq!(sb.flags, SB_FLAG_RECALCULATING | SB_FLAG_FIXED_PADDING);
    assert_eq!(sb.version, 4);
    // ... refused with a key on a new fix_hmac volume without a journal MAC, as the kernel's.
    assert_eq!(
        fmt(
            "7:0 0 - J 3 recalculate fix_hmac internal_hash:hmac(sha256):00",
            65536
        ),
        Err(HMAC_RECALCULATE_REFUSED)
    );
    assert!(fmt(
        "7:0 0 - J 4 recalculate legacy_recalculate fix_hmac internal_hash:hmac(sha256):00",
        65536
    )
    .is_ok());
    // The journal asked for, in whole sections (at least one); the reserved sectors.
    let sb = fmt("7:0 0 - J 2 journal_sectors:1 internal_hash:crc32c", 65536).unwrap();
    assert_eq!(sb.journal_sections, 1);
    let sb = fmt(
        "7:0 0 - J 2 journal_sectors:1000 internal_hash:crc32c",
        1 << 20,
    )
    .unwrap();
    assert_eq!(sb.journal_sections, 1000 / 176);
    let a = fmt("7:0 0 - J 1 internal_hash:crc32c", 65536).unwrap();
    let b = fmt("7:0 1000 - J 1 internal_hash:crc32c", 65536).unwrap();
    assert!(b.provided_data_sectors < a.provided_data_sectors);
    // The journal MAC flag shapes the journal.
    let sb = fmt(
        "7:0 0 - J 2 internal_hash:crc32c journal_mac:hmac(sha256):00",
        65536,
    )
    .unwrap();
    assert!(sb.has(SB_FLAG_HAVE_JOURNAL_MAC));
}

#[test]
fn devices_too_small_are_refused() {
    let t = parse("7:0 0 - J 1 internal_hash:crc32c");
    for sectors in [0, 1, 8, 100, 8 + 176 + 8] {
        assert_eq!(
            new_superblock(&t, 4, sectors, None),
            Err(CANNOT_INITIALIZE),
            "{sectors}"
        );
    }
    // Reserved sectors past the end, and absurd sizes, are refused or fit, never overflow.
    let t = parse("7:0 18446744073709551000 - J 1 internal_hash:crc32c");
    assert_eq!(new_superblock(&t, 4, 65536, None), Err(CANNOT_INITIALIZE));
    assert_eq!(
        new_superblock(&t, 4, u64::MAX, None),
        Err(CANNOT_INITIALIZE)
    );
    let t = parse("7:0 0 255 J 3 interleave_sectors:4294967295 journal_sectors:4294967295 internal_hash:crc32c");
    let sb = new_superblock(&t, 255, u64::MAX, None).unwrap();
    assert_eq!(sb.log2_interleave_sectors, 31);
    assert!(sb.provided_data_sectors > 0);
    let t = parse("7:0 0 - J 1 internal_hash:crc32c");
    let sb = new_superblock(&t, 4, u64::MAX, None).unwrap();
    assert_eq!(sb.journal_sections, 131072 / 176);
}

/// Every sector of the journal formatting writes for `sb`.
fn initial_journal(sb: &Superblock, shape: &JournalShape) -> Vec<[u8; 512]> {
    let mut out = Vec::new();
    for section in 0..sb.journal_sections {
        for sector in 0..shape.section_sectors {
            let mut s = [0x5au8; 512];
            journal::erased_sector(shape, section, sector, INITIAL_COMMIT_SEQ, &mut s);
            out.push(s);
        }
    }
    out
}

#[test]
fn initial_journal_is_empty_and_whole() {
    for line in [
        "7:0 0 - J 2 fix_padding internal_hash:crc32c",
        "7:0 0 - J 2 block_size:4096 internal_hash:sha256",
        "7:0 0 16 J 2 journal_sectors:2000 internal_hash:sha1",
        "7:0 0 - B 1 internal_hash:sha256",
        "7:0 0 - D 2 block_size:1024 internal_hash:crc32c",
    ] {
        let t = parse(line);
        let sb = new_superblock(&t, tag_size(&t), 1 << 18, None).unwrap();
        let geometry = open(&sb, None, 1 << 18, 0, 7).unwrap();
        let shape = geometry.journal();
        let sectors = initial_journal(&sb, &shape);
        assert_eq!(
            sectors.len() as u64 + 8,
            u64::from(geometry.initial_sectors()),
            "{line}"
        );
        let n = sb.journal_sections;
        assert!(n >= 1);
        let mut summary = vec![0u8; n as usize];
        let mut scan = Scan::new(shape, &mut summary);
        for (i, s) in sectors.iter().enumerate() {
            let (section, sector) = (
                (i as u32) / shape.section_sectors,
                (i as u32) % shape.section_sectors,
            );
            // The commit id of sequence 0, as the kernel's dm_integrity_commit_id.
            let id = 0x1111_1111_1111_1111u64 ^ (u64::from(section) << 32 | u64::from(sector));
            assert_eq!(s[504..], id.to_le_bytes(), "{line}: {section}/{sector}");
            assert_eq!(
                journal::sector_seq(section, sector, s),
                Some(INITIAL_COMMIT_SEQ)
            );
            if sector >= JOURNAL_BLOCK_SECTORS {
                assert!(
                    s[..504].iter().all(|&b| b == 0),
                    "{line}: data sector {section}/{sector}"
                );
            }
            scan.sector(section, sector, s);
        }
        // Every entry of every section unused; the bytes around them zero.
        for section in 0..n {
            let first = (section * shape.section_sectors) as usize;
            let entries: Vec<u8> = sectors[first..first + JOURNAL_BLOCK_SECTORS as usize]
                .iter()
                .flat_map(|s| s[..].to_vec())
                .collect();
            let mut seen = 0;
            for e in 0..shape.section_entries {
                let entry = journal::entry(&shape, &entries, e).unwrap();
                assert!(journal::entry_is_unused(entry), "{line}: entry {e}");
                assert_eq!(
                    journal::action(entry, t.log2_sectors_per_block(), u64::MAX),
                    Action::Unused
                );
                assert_eq!(entry[..4], [0; 4]);
                assert_eq!(entry[4..8], [0xff; 4]);
                assert!(entry[8..].iter().all(|&b| b == 0));
                seen += 1;
            }
            assert_eq!(seen, shape.section_entries);
            // Past the last entry of each entry sector, zeroes up to the commit id.
            for s in &sectors[first..first + JOURNAL_BLOCK_SECTORS as usize] {
                let end = (shape.entries_per_sector * shape.entry_size) as usize;
                assert!(s[end..504].iter().all(|&b| b == 0), "{line}");
            }
        }
        // A resume replays nothing, erases nothing, and mode J commits next at section 0 with
        // the sequence after the journal's (`replay_journal` advances it where it wraps): what
        // dm-integrity's resume after formatting does (`just_formatted`).
        let whole = Plan {
            start: 0,
            sections: n,
            replay: false,
            erase: None,
            commit_seq: journal::next_seq(INITIAL_COMMIT_SEQ),
            continue_section: 0,
        };
        assert_eq!(scan.plan(true), Ok(whole), "{line}");
        assert_eq!(scan.plan(false), Ok(whole), "{line}");
    }
}
