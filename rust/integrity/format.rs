// SPDX-License-Identifier: GPL-2.0

//! Formatting a blank device, as dm-integrity's constructor does when the superblock area holds
//! no magic and is all zero (and the mode is not `R`): what it writes, computed from the table
//! line and the device's size.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test` (`tests/integrity_new_volume.rs`, against
//! superblocks the kernel's dm-integrity wrote).
//!
//! dm-integrity 1.15 (Linux 7.3), step by step:
//!
//! 1. `initialize_superblock`: the tag size and block size of the table; `SB_FLAG_HAVE_JOURNAL_MAC`
//!    with `journal_mac`; journal sections = the journal size asked for (`journal_sectors`, by
//!    default 1/128 of the data device, at most 64 MiB) over the section size, at least one;
//!    `SB_FLAG_FIXED_HMAC` (and a random salt, which the caller draws) with `fix_hmac` and an
//!    internal hash or a journal MAC; `SB_FLAG_DISCARD_KEYED` with `allow_discards_keyed`;
//!    without a metadata device `SB_FLAG_FIXED_PADDING` with `fix_padding` and the interleave
//!    asked for rounded down to a power of two within 8 ..= 2^31; the provided data sectors
//!    found bit by bit ([`crate::integrity_geometry::initialize`]).
//! 2. The constructor then lays the device out from that superblock as from any other, and,
//!    because it formatted, records the table's bitmap granularity
//!    (`log2_blocks_per_bitmap_bit`, made coarse enough for the journal area).
//! 3. `recalculate` sets `SB_FLAG_RECALCULATING` from sector 0 (with the same checks as on a
//!    formatted device).
//! 4. Once every other check passed and everything is allocated: the whole journal is written
//!    empty with commit sequence [`INITIAL_COMMIT_SEQ`] (`init_journal(ic, 0, sections, 0)`:
//!    zeroes, every entry unused, the commit ids: `integrity_journal::erased_sector`), then the
//!    superblock area with FUA (all zero but the superblock), its version set by `sb_set_version`.
//!
//! A later resume finds the journal whole and empty, so it writes nothing to it (dm-integrity
//! skips reading the journal it just made, `just_formatted`; the outcome is the same).

use crate::dm_args::{ArgError, ArgResult};
use crate::integrity_geometry::{
    bitmap, default_journal_sectors, initialize, open, Format,
};
use crate::integrity_superblock::{Superblock, SB_FLAG_FIXED_HMAC, SB_SECTORS};
use crate::integrity_table::{IntegrityTable, Mode};

/// The commit sequence of a freshly formatted journal.
pub const INITIAL_COMMIT_SEQ: u8 = 0;

/// Bytes of the superblock area written when formatting (`SB_SECTORS` sectors).
pub const AREA_BYTES: usize = SB_SECTORS as usize * 512;

/// dm-integrity's message when no layout fits (`initialize_superblock` failed).
pub const CANNOT_INITIALIZE: ArgError = ArgError(c"Could not initialize superblock");

/// The superblock dm-integrity writes when table `t` formats a blank device of
/// `data_device_sectors` sectors (with a metadata device of `meta_device_sectors`, if any):
/// every field but the salt, which is zero here and must be filled with random bytes when the
/// result has `SB_FLAG_FIXED_HMAC` ([`needs_salt`]). `tag_size` is the tag size in use (the
/// table's, or the internal hash's digest size: [`IntegrityTable::check`]).
///
/// Errors are dm-integrity's, for a table that cannot format this device: no layout fits
/// (`Could not initialize superblock`), or `recalculate` with keys refused for security.
pub fn new_superblock(
    t: &IntegrityTable<'_>,
    tag_size: u32,
    data_device_sectors: u64,
    meta_device_sectors: Option<u64>,
) -> ArgResult<Superblock> {
    let meta_device = meta_device_sectors.is_some();
    let f = Format {
        tag_size,
        log2_sectors_per_block: t.log2_sectors_per_block(),
        journal_sectors: match t.journal_sectors() {
            0 => default_journal_sectors(data_device_sectors),
            n => n,
        },
        interleave_sectors: t.interleave_sectors(),
        journal_mac: t.journal_mac().is_some(),
        fix_padding: t.fix_padding(),
        fixed_hmac: t.fix_hmac() && (t.internal_hash().is_some() || t.journal_mac().is_some()),
        discard_keyed: t.discard_keyed(),
        inline: false,
        bitmap_mode: t.mode() == Mode::Bitmap,
        start: t.start(),
        log2_buffer_sectors: t.log2_buffer_sectors(),
    };
    let formatted =
        initialize(&f, data_device_sectors, meta_device_sectors).map_err(|_| CANNOT_INITIALIZE)?;
    let mut sb = formatted.superblock;
    // The constructor lays the new superblock out as any other (it fits: initialize found it).
    let geometry = open(
        &sb,
        meta_device_sectors,
        data_device_sectors,
        t.start(),
        formatted.log2_buffer_sectors,
    )
    .map_err(|e| ArgError(e.message()))?;
    let sectors_per_bit = t.log2_sectors_per_bitmap_bit().map(|l| 1u64 << l.min(63));
    // At most 63: fits.
    sb.log2_blocks_per_bitmap_bit = bitmap(&geometry, sectors_per_bit).log2_blocks_per_bit as u8;
    t.apply_recalculate(&mut sb, geometry.provided_data_sectors())?;
    sb.set_version(f.bitmap_mode, meta_device);
    Ok(sb)
}

/// Whether the new superblock takes a random salt (`fix_hmac`).
pub fn needs_salt(sb: &Superblock) -> bool {
    sb.has(SB_FLAG_FIXED_HMAC)
}
