// SPDX-License-Identifier: GPL-2.0

//! The dm-integrity format and status lines against the kernel's own dm-integrity, from records
//! made in the guest by `scripts/integrity-reference.sh` (`tests/data/integrity/`): for each
//! device integritysetup formatted and opened there,
//!
//! - the superblock parses, and writes back to the same 64 bytes;
//! - formatting with the same parameters gives the kernel's superblock (all but the salt);
//! - our layout gives the kernel's `provided_data_sectors` (superblock, mapping size and status);
//! - the kernel's `dmsetup table` line parses, passes the constructor's checks, and our writer
//!   prints it back unchanged from the state our geometry computes; the status line too.
//!
//! The records are committed (made 2026-11-24 with the 7.3 kernel's dm-integrity and cryptsetup
//! 2.7); the test fails without them. `INTEGRITY_RECORDS` names another directory of records.

use std::fs;
use std::path::Path;

mod common;

use common::{digest_size, records, value};
use dm_rust_pure::args::Args;
use dm_rust_pure::integrity_geometry::{
    bitmap, default_journal_sectors, initialize, open, provided_data_sectors, Format, Params,
};
use dm_rust_pure::integrity_superblock::{Superblock, SB_FLAG_FIXED_HMAC, SB_FLAG_RECALCULATING};
use dm_rust_pure::integrity_table::{IntegrityTable, Mode, State};

/// Debian's kernel tick rate.
const HZ: u32 = 250;

/// The value of `--opt <value>` among integritysetup options.
fn option<'a>(opts: &'a str, name: &str) -> Option<&'a str> {
    let words: Vec<&str> = opts.split_whitespace().collect();
    words.windows(2).find(|w| w[0] == name).map(|w| w[1])
}

fn check(record: &Path) {
    let name = record.file_stem().unwrap().to_string_lossy().into_owned();
    let text = fs::read_to_string(record).unwrap();
    let sb_bytes = fs::read(record.with_extension("sb")).unwrap();
    let device_sectors: u64 = value(&text, "device_sectors").parse().unwrap();
    let meta_sectors: u64 = value(&text, "meta_sectors").parse().unwrap();
    let journal_request: u32 = value(&text, "journal_request").parse().unwrap();
    let format_opts = value(&text, "format");
    let meta = meta_sectors != 0;

    let sb = Superblock::parse(&sb_bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(sb.to_bytes()[..], sb_bytes[..64], "{name}");

    // The kernel's table line: "<start> <length> integrity <args>".
    let table_line = value(&text, "table");
    let words: Vec<&str> = table_line.split(' ').collect();
    assert_eq!(words[2], "integrity", "{name}");
    let length: u64 = words[1].parse().unwrap();
    let argv: Vec<&[u8]> = words[3..].iter().map(|w| w.as_bytes()).collect();
    let mut args = Args::new(&argv);
    let table = IntegrityTable::parse(&mut args, HZ).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert!(args.is_empty(), "{name}");
    let digest = table.internal_hash().map(|a| digest_size(a.alg()));
    let tag_size = table
        .check(digest)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(tag_size, u32::from(sb.integrity_tag_size), "{name}");

    // The layout: the kernel's provided_data_sectors everywhere.
    let meta_device_sectors = if meta { meta_sectors } else { device_sectors };
    let params = Params::from_superblock(&sb, meta, table.start(), table.log2_buffer_sectors());
    let provided = provided_data_sectors(params, device_sectors, meta_device_sectors);
    assert_eq!(provided, sb.provided_data_sectors, "{name}");
    assert_eq!(provided, length, "{name}: mapping size");
    // What the constructor lays out (the buffer size printed is the one in use).
    let geometry = open(
        &sb,
        meta.then_some(meta_sectors),
        device_sectors,
        table.start(),
        table.log2_buffer_sectors(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(geometry.provided_data_sectors(), provided, "{name}");
    assert_eq!(
        geometry.params().log2_buffer_sectors,
        table.log2_buffer_sectors(),
        "{name}"
    );

    // Formatting with the same parameters gives the kernel's superblock.
    let log2_blocks_per_bit = bitmap(&geometry, None).log2_blocks_per_bit;
    let format = Format {
        tag_size,
        log2_sectors_per_block: u32::from(sb.log2_sectors_per_block),
        journal_sectors: match journal_request {
            0 => default_journal_sectors(device_sectors),
            n => n,
        },
        interleave_sectors: option(format_opts, "--interleave-sectors")
            .map_or(0, |v| v.parse().unwrap()),
        journal_mac: format_opts.contains("--journal-integrity "),
        fix_padding: !format_opts.contains("--integrity-legacy-padding"),
        fixed_hmac: sb.has(SB_FLAG_FIXED_HMAC),
        discard_keyed: false,
        inline: false,
        bitmap_mode: format_opts.split_whitespace().any(|w| w == "-B"),
        start: table.start(),
        log2_buffer_sectors: table.log2_buffer_sectors(),
    };
    let mut ours = initialize(&format, device_sectors, meta.then_some(meta_sectors))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
        .superblock;
    ours.salt = sb.salt;
    ours.log2_blocks_per_bitmap_bit = log2_blocks_per_bit as u8;
    ours.set_version(format.bitmap_mode, meta);
    assert_eq!(ours, sb, "{name}: formatted superblock");

    // The table and status lines, written back from our state.
    let mut live = sb;
    if table.recalculate() {
        live.flags |= SB_FLAG_RECALCULATING;
    }
    let status_line = value(&text, "status");
    let status: Vec<&str> = status_line.split(' ').collect();
    assert_eq!(status[2], "integrity", "{name}");
    let mismatches: u64 = status[3].parse().unwrap();
    if let Ok(pos) = status[5].parse() {
        live.recalc_sector = pos;
    }
    let sectors_per_bit = table.log2_sectors_per_bitmap_bit().map(|l| 1u64 << l);
    let state = State {
        dev_name: std::str::from_utf8(table.dev()).unwrap(),
        meta_dev_name: table.meta_device().map(|d| std::str::from_utf8(d).unwrap()),
        superblock: &live,
        tag_size,
        provided_data_sectors: provided,
        mismatches,
        log2_buffer_sectors: geometry.params().log2_buffer_sectors,
        initial_sectors: geometry.initial_sectors(),
        journal_entries: u32::try_from(geometry.journal_entries()).unwrap(),
        log2_blocks_per_bitmap_bit: if table.mode() == Mode::Bitmap {
            bitmap(&geometry, sectors_per_bit).log2_blocks_per_bit
        } else {
            0
        },
        hz: HZ,
    };
    let mut out = String::new();
    table.write_table(&mut out, &state).unwrap();
    assert_eq!(out, words[3..].join(" "), "{name}: table line");
    out.clear();
    table.write_info(&mut out, &state).unwrap();
    assert_eq!(out, status[3..].join(" "), "{name}: status line");
}

#[test]
fn kernel_made_devices() {
    let records = records();
    assert!(
        !records.is_empty(),
        "no records of the kernel's dm-integrity in tests/data/integrity: \
         make them with scripts/vm.sh scripts/integrity-reference.sh"
    );
    for record in &records {
        check(record);
    }
    eprintln!("{} kernel-made devices checked", records.len());
}
