// SPDX-License-Identifier: GPL-2.0

//! Mode `B`'s dirty bitmap: which bits cover which sectors, the operations on a bitmap held in
//! a byte slice, which 4 KiB blocks of it a write must put on disk first, what a bitmap flush may
//! clear, which part of a range the recalculation must redo, what resume does with a dirty
//! bitmap, and the empty journal dm-integrity writes over the bitmap when it suspends.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`. The bitmaps are byte slices the caller
//! owns.
//!
//! # On disk (dm-integrity 1.15)
//!
//! The bitmap lives at the start of the journal area (`start + 8` sectors), in blocks of
//! [`BITMAP_BLOCK_SIZE`] bytes. Bit `n` covers the data sectors
//! `[n << shift, (n + 1) << shift)`, `shift` being `log2_sectors_per_block +
//! log2_blocks_per_bitmap_bit`; the kernel keeps it in `unsigned long` words, little-endian, so
//! bit `n` is bit `n % 8` of byte `n / 8`. The superblock's `SB_FLAG_DIRTY_BITMAP` says the bitmap
//! on disk is in force: set on resume in mode `B`, cleared by a clean suspend, which also writes
//! an empty journal over the area ([`empty_journal_sector`]).
//!
//! # In memory
//!
//! Three bitmaps of the same size, as dm-integrity's: `disk` (the image of what is, or is about
//! to be, on disk), `may_write` (bits known to be set on disk: a write inside them goes ahead at
//! once) and `recalc` (regions whose tags must be recalculated; reads there are not checked).

use crate::integrity_geometry::{
    Bitmap as Shape, JournalShape, BITMAP_BLOCK_SIZE,
};
use crate::integrity_journal::erased_sector;
use crate::integrity_superblock::{Superblock, SB_FLAG_DIRTY_BITMAP, SB_FLAG_RECALCULATING};

/// Sectors of one bitmap block.
pub const BITMAP_BLOCK_SECTORS: u64 = BITMAP_BLOCK_SIZE >> 9;

/// Bits in one bitmap block.
pub const BITS_PER_BLOCK: u64 = BITMAP_BLOCK_SIZE * 8;


/// Default `bitmap_flush_interval` in milliseconds (`BITMAP_FLUSH_INTERVAL`, 10 s).
pub const DEFAULT_FLUSH_INTERVAL_MS: u32 = 10_000;

/// The bitmap's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bits {
    /// log2 of the sectors one bit covers.
    pub shift: u32,
    /// log2 of the blocks one bit covers (`log2_blocks_per_bitmap_bit`).
    pub log2_blocks_per_bit: u32,
    /// log2 of the sectors per block.
    pub log2_sectors_per_block: u32,
    /// Bits in use.
    pub bits: u64,
    /// 4 KiB blocks of the bitmap.
    pub blocks: u64,
}

impl Bits {
    /// The geometry of a bitmap shape ([`crate::integrity_geometry::bitmap`]).
    pub fn new(shape: &Shape, log2_sectors_per_block: u32) -> Self {
        Self {
            shift: log2_sectors_per_block + shape.log2_blocks_per_bit,
            log2_blocks_per_bit: shape.log2_blocks_per_bit,
            log2_sectors_per_block,
            bits: shape.bits,
            blocks: shape.blocks,
        }
    }

    /// Bytes of each in-memory bitmap (whole blocks, as read from and written to disk).
    pub fn bytes(&self) -> u64 {
        self.blocks * BITMAP_BLOCK_SIZE
    }

    /// Sectors one bit covers.
    pub fn sectors_per_bit(&self) -> u64 {
        1u64.checked_shl(self.shift).unwrap_or(0)
    }

    /// The first and last bits covering `n` sectors at `sector`; `None` when `n` is 0.
    pub fn span(&self, sector: u64, n: u64) -> Option<(u64, u64)> {
        let last = sector.checked_add(n.checked_sub(1)?)?;
        Some((shr(sector, self.shift), shr(last, self.shift)))
    }

    /// The first and last bitmap blocks holding the bits of `n` sectors at `sector`.
    pub fn blocks_of(&self, sector: u64, n: u64) -> Option<(u64, u64)> {
        let (a, b) = self.span(sector, n)?;
        Some((a / BITS_PER_BLOCK, b / BITS_PER_BLOCK))
    }

    /// `sector` rounded down to the start of its bit.
    pub fn round_down(&self, sector: u64) -> u64 {
        shl(shr(sector, self.shift), self.shift)
    }

    /// Whether every bit covering the sectors is set (true for no sectors, as dm-integrity's
    /// `BITMAP_OP_TEST_ALL_SET`).
    pub fn all_set(&self, map: &[u8], sector: u64, n: u64) -> bool {
        self.span(sector, n)
            .is_none_or(|(a, b)| (a..=b).all(|i| test(map, i)))
    }

    /// Whether every bit covering the sectors is clear (true for no sectors).
    pub fn all_clear(&self, map: &[u8], sector: u64, n: u64) -> bool {
        match self.span(sector, n) {
            None => true,
            Some((a, b)) => bits_clear(map, a, b),
        }
    }

    /// Sets every bit covering the sectors.
    pub fn set(&self, map: &mut [u8], sector: u64, n: u64) {
        if let Some((a, b)) = self.span(sector, n) {
            fill(map, a, b, true);
        }
    }

    /// Clears every bit covering the sectors.
    pub fn clear(&self, map: &mut [u8], sector: u64, n: u64) {
        if let Some((a, b)) = self.span(sector, n) {
            fill(map, a, b, false);
        }
    }

    /// Below which sector a bitmap flush may clear the bits (once the tags of every write are on
    /// disk): all of the device, or while recalculating only what is below the position,
    /// rounded down to a bit (`bitmap_flush_work`).
    pub fn flush_limit(&self, sb: &Superblock, provided_data_sectors: u64) -> u64 {
        if sb.has(SB_FLAG_RECALCULATING) {
            self.round_down(sb.recalc_sector)
        } else {
            provided_data_sectors
        }
    }

    /// The part of the range `[start, start + n)` the recalculation must redo: `None` when every
    /// bit covering it is clear in `recalc`, else the range without the clear blocks at either
    /// end (the range and the result are block-aligned).
    pub fn recalc_part(&self, recalc: &[u8], start: u64, n: u64) -> Option<(u64, u64)> {
        if self.all_clear(recalc, start, n) {
            return None;
        }
        let (mut s, mut e) = (start, start + n);
        // Whole bits at once: every block of a clear bit is clear.
        while s < e && !test(recalc, shr(s, self.shift)) {
            s = shl(shr(s, self.shift) + 1, self.shift).min(e);
        }
        while e > s && !test(recalc, shr(e - 1, self.shift)) {
            e = self.round_down(e - 1).max(s);
        }
        Some((s, e - s))
    }

    /// The first sector at or after `from` (block-aligned), below `end`, whose bit is set in
    /// `recalc`; `end` if there is none. The recalculation moves its position there at once:
    /// a clean region needs no work, and its tags are valid.
    pub fn next_marked(&self, recalc: &[u8], from: u64, end: u64) -> u64 {
        if from >= end {
            return end;
        }
        let last = shr(end - 1, self.shift);
        let mut i = shr(from, self.shift);
        while i <= last {
            if i % 8 == 0 {
                // Whole clear bytes at once.
                match usize::try_from(i / 8).ok().and_then(|b| recalc.get(b)) {
                    None => return end,
                    Some(0) => {
                        i += 8;
                        continue;
                    }
                    Some(_) => {}
                }
            }
            if test(recalc, i) {
                return shl(i, self.shift).max(from).min(end);
            }
            i += 1;
        }
        end
    }

    /// After the range `[start, start + n)` was recalculated: the sectors whose `recalc` bits
    /// may be cleared, `[start, end)` with both rounded down to a bit (a bit the range ends
    /// inside is cleared by the range that finishes it).
    pub fn recalc_done(&self, start: u64, n: u64) -> (u64, u64) {
        let a = self.round_down(start);
        let b = self.round_down(start.saturating_add(n));
        (a, b.saturating_sub(a))
    }
}

fn shr(x: u64, s: u32) -> u64 {
    x.checked_shr(s).unwrap_or(0)
}

fn shl(x: u64, s: u32) -> u64 {
    x.checked_shl(s).unwrap_or(u64::MAX)
}

/// Bit `i` of `map` (clear past its end).
pub fn test(map: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|b| map.get(b))
        .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
}

fn bits_clear(map: &[u8], a: u64, b: u64) -> bool {
    let mut i = a;
    while i <= b {
        if i % 8 == 0 && b - i >= 7 {
            let Some(byte) = usize::try_from(i / 8).ok().and_then(|x| map.get(x)) else {
                return true;
            };
            if *byte != 0 {
                return false;
            }
            i += 8;
        } else {
            if test(map, i) {
                return false;
            }
            i += 1;
        }
    }
    true
}

/// Sets (`value`) or clears bits `a..=b` of `map` (bits past its end are ignored).
fn fill(map: &mut [u8], a: u64, b: u64, value: bool) {
    let mut i = a;
    while i <= b {
        let Some(byte) = usize::try_from(i / 8).ok().and_then(|x| map.get_mut(x)) else {
            return;
        };
        if i % 8 == 0 && b - i >= 7 {
            *byte = if value { 0xff } else { 0 };
            i += 8;
        } else {
            let m = 1u8 << (i % 8);
            if value {
                *byte |= m;
            } else {
                *byte &= !m;
            }
            i += 1;
        }
    }
}

/// What [`on_resume`] asks the caller to write, in this order: the bitmap (all of it, from
/// `disk`), the empty journal (over the bitmap: mode `D` opening a dirty bitmap), the
/// superblock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Write the whole bitmap (`disk`) with FUA.
    pub write_bitmap: bool,
    /// Write an empty journal over the journal area.
    pub write_empty_journal: bool,
    /// Write the superblock.
    pub write_superblock: bool,
}

/// The state of a resume, as dm-integrity's `dm_integrity_resume` leaves it for modes `B` and
/// `D`. `disk` holds the bitmap read from the device when [`needs_read`] said so (else anything:
/// it is overwritten); `recalc` and `may_write` are mode `B`'s (empty slices in mode `D`).
/// `old_provided` is the size the superblock recorded before the device was (maybe) resized;
/// `reset` is `reset_recalculate`. The recalculation itself then starts as without a bitmap
/// (`recalc::on_resume` with no reset).
#[allow(clippy::too_many_arguments)]
pub fn on_resume(
    sb: &mut Superblock,
    bitmap_mode: bool,
    bits: &Bits,
    reset: bool,
    old_provided: u64,
    provided: u64,
    disk: &mut [u8],
    recalc: &mut [u8],
    may_write: &mut [u8],
) -> Resume {
    let mut r = Resume::default();
    let same_shift = u32::from(sb.log2_blocks_per_bitmap_bit) == bits.log2_blocks_per_bit;
    let restart = |sb: &mut Superblock| {
        sb.flags |= SB_FLAG_RECALCULATING;
        sb.recalc_sector = 0;
    };
    if provided != old_provided {
        // A device that grew under a dirty bitmap: the new sectors are dirty.
        if provided > old_provided && bitmap_mode && sb.has(SB_FLAG_DIRTY_BITMAP) && same_shift {
            bits.set(disk, old_provided, provided - old_provided);
            r.write_bitmap = true;
        }
        sb.provided_data_sectors = provided;
        r.write_superblock = true;
    }
    if sb.has(SB_FLAG_DIRTY_BITMAP) {
        if bitmap_mode {
            if same_shift && !reset {
                recalc.copy_from_slice(disk);
                may_write.copy_from_slice(disk);
                if !bits.all_clear(disk, 0, provided) {
                    restart(sb);
                }
            } else {
                sb.log2_blocks_per_bitmap_bit = bits.log2_blocks_per_bit as u8;
                for m in [&mut *disk, &mut *recalc, &mut *may_write] {
                    bits.set(m, 0, provided);
                }
                r.write_bitmap = true;
                restart(sb);
            }
        } else {
            if !(same_shift && bits.all_clear(disk, 0, provided)) || reset {
                restart(sb);
            }
            r.write_empty_journal = true;
            sb.flags &= !SB_FLAG_DIRTY_BITMAP;
        }
        r.write_superblock = true;
    } else {
        if reset {
            restart(sb);
        }
        if bitmap_mode {
            sb.flags |= SB_FLAG_DIRTY_BITMAP;
            sb.log2_blocks_per_bitmap_bit = bits.log2_blocks_per_bit as u8;
            r.write_superblock = true;
            // Only the bits in use: the rest of the blocks keeps what the journal area held
            // (read by the caller), as in dm-integrity, whose bitmap is its journal's memory.
            bits.clear(disk, 0, provided);
            recalc.fill(0);
            may_write.fill(0);
            if sb.has(SB_FLAG_RECALCULATING) && sb.recalc_sector < provided {
                let n = provided - sb.recalc_sector;
                for m in [&mut *disk, &mut *recalc, &mut *may_write] {
                    bits.set(m, sb.recalc_sector, n);
                }
            }
            r.write_bitmap = true;
        } else if reset {
            r.write_superblock = true;
        }
    }
    r
}

/// Whether resume must read the bitmap from the device before [`on_resume`]: a dirty one, and
/// in mode `B` the area it is about to be written over (so that the bytes past the bits in use
/// stay as they are on disk, as dm-integrity leaves them).
pub fn needs_read(sb: &Superblock, bitmap_mode: bool) -> bool {
    bitmap_mode || sb.has(SB_FLAG_DIRTY_BITMAP)
}

/// Sector `sector` (0 to `section_sectors - 1`) of section `section` of an empty journal, as
/// dm-integrity's `init_journal(ic, 0, journal_sections, 0)` writes it without journal
/// encryption or MAC: zeroes, every entry of an entry sector marked unused (`sector_hi` all
/// ones), and the commit id of sequence 0 xored with the section and sector in the last 8 bytes.
pub fn empty_journal_sector(shape: &JournalShape, section: u32, sector: u32, out: &mut [u8; 512]) {
    erased_sector(shape, section, sector, 0, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity_geometry::Bitmap;

    fn bits(log2_spb: u32, log2_bpb: u32, n: u64) -> Bits {
        let shape = Bitmap {
            log2_blocks_per_bit: log2_bpb,
            bits: n,
            blocks: n.div_ceil(BITS_PER_BLOCK),
        };
        Bits::new(&shape, log2_spb)
    }

    fn sb() -> Superblock {
        Superblock {
            version: 5,
            log2_interleave_sectors: 15,
            integrity_tag_size: 4,
            journal_sections: 5,
            provided_data_sectors: 1 << 20,
            flags: 0,
            log2_sectors_per_block: 0,
            log2_blocks_per_bitmap_bit: 0,
            recalc_sector: 0,
            salt: [0; 16],
        }
    }

    #[test]
    fn bit_order_is_the_kernels_little_endian_words() {
        let b = bits(0, 15, 64);
        let mut m = [0u8; 8];
        b.set(&mut m, 9 << 15, 1);
        assert_eq!(m, [0, 2, 0, 0, 0, 0, 0, 0]);
        b.set(&mut m, 63 << 15, 1 << 15);
        assert_eq!(u64::from_le_bytes(m), (1 << 9) | (1 << 63));
        assert!(b.all_set(&m, (9 << 15) + 5, 100));
        assert!(!b.all_set(&m, (9 << 15) + 5, 1 << 15));
        assert!(b.all_clear(&m, 0, 9 << 15));
        assert!(!b.all_clear(&m, 0, (9 << 15) + 1));
    }

    #[test]
    fn empty_ranges_as_the_kernel() {
        let b = bits(0, 3, 100);
        let m = [0u8; 16];
        assert!(b.all_set(&m, 8, 0));
        assert!(b.all_clear(&m, 8, 0));
        assert_eq!(b.span(8, 0), None);
    }

    #[test]
    fn spans_and_blocks() {
        // 4 KiB blocks (8 sectors), 2^3 blocks per bit: 64 sectors per bit.
        let b = bits(3, 3, 1 << 20);
        assert_eq!(b.sectors_per_bit(), 64);
        assert_eq!(b.span(0, 8), Some((0, 0)));
        assert_eq!(b.span(56, 16), Some((0, 1)));
        assert_eq!(b.blocks_of(64 * 32767, 128), Some((0, 1)));
        assert_eq!(b.blocks_of(64 * 32768, 8), Some((1, 1)));
        assert_eq!(b.round_down(130), 128);
    }

    #[test]
    fn set_and_clear_long_runs() {
        let b = bits(0, 0, 1000);
        let mut m = [0u8; 128];
        b.set(&mut m, 3, 990);
        assert!(b.all_set(&m, 3, 990));
        assert!(!test(&m, 2) && !test(&m, 993));
        assert_eq!(m[1..123].iter().filter(|x| **x == 0xff).count(), 122);
        b.clear(&mut m, 5, 900);
        assert!(b.all_clear(&m, 5, 900));
        assert!(test(&m, 4) && test(&m, 905));
        // Past the slice: ignored, tested as clear.
        b.set(&mut m, 2000, 8);
        assert!(b.all_clear(&m, 2000, 8));
    }

    #[test]
    fn next_marked_region() {
        // 8 sectors per bit.
        let b = bits(0, 3, 4096);
        let mut m = [0u8; 512];
        assert_eq!(b.next_marked(&m, 0, 1000), 1000);
        b.set(&mut m, 8 * 700, 1);
        b.set(&mut m, 8 * 3, 1);
        assert_eq!(b.next_marked(&m, 0, 32768), 24);
        assert_eq!(b.next_marked(&m, 26, 32768), 26);
        assert_eq!(b.next_marked(&m, 32, 32768), 5600);
        assert_eq!(b.next_marked(&m, 32, 5000), 5000);
        assert_eq!(b.next_marked(&m, 5608, 32768), 32768);
        assert_eq!(b.next_marked(&m, 40000, 32768), 32768);
    }

    #[test]
    fn flush_limit_stops_below_the_recalculation() {
        let b = bits(0, 15, 64);
        let mut s = sb();
        assert_eq!(b.flush_limit(&s, 1 << 20), 1 << 20);
        s.flags |= SB_FLAG_RECALCULATING;
        s.recalc_sector = (3 << 15) + 100;
        assert_eq!(b.flush_limit(&s, 1 << 20), 3 << 15);
    }

    #[test]
    fn recalculation_skips_clean_regions() {
        // 8 sectors per bit, 1-sector blocks.
        let b = bits(0, 3, 64);
        let mut m = [0u8; 8];
        assert_eq!(b.recalc_part(&m, 0, 256), None);
        b.set(&mut m, 40, 1); // bit 5: sectors 40..48
        b.set(&mut m, 72, 1); // bit 9: sectors 72..80
        assert_eq!(b.recalc_part(&m, 0, 256), Some((40, 40)));
        assert_eq!(b.recalc_part(&m, 44, 8), Some((44, 4)));
        assert_eq!(b.recalc_part(&m, 48, 24), None);
        // Clearing after a range: whole bits below its end only.
        assert_eq!(b.recalc_done(36, 20), (32, 24));
        assert_eq!(b.recalc_done(41, 3), (40, 0));
    }

    #[test]
    fn resume_clean_bitmap_mode_marks_the_bitmap_in_force() {
        let b = bits(0, 15, 32);
        let (mut d, mut r, mut w) = ([0xffu8; 4096], [1u8; 4096], [1u8; 4096]);
        let mut s = sb();
        let p = s.provided_data_sectors;
        let res = on_resume(&mut s, true, &b, false, p, p, &mut d, &mut r, &mut w);
        assert_eq!(
            res,
            Resume {
                write_bitmap: true,
                write_empty_journal: false,
                write_superblock: true
            }
        );
        assert!(s.has(SB_FLAG_DIRTY_BITMAP));
        assert_eq!(s.log2_blocks_per_bitmap_bit, 15);
        // The 32 bits in use are cleared; the rest of the block is left as read.
        assert_eq!(&d[..5], &[0, 0, 0, 0, 0xff]);
        assert!(d[4..].iter().all(|x| *x == 0xff));
        assert!(r.iter().chain(w.iter()).all(|x| *x == 0));
        // Recalculating from sector 3 << 15: the bits from there are dirty.
        let mut s = sb();
        s.flags |= SB_FLAG_RECALCULATING;
        s.recalc_sector = 3 << 15;
        on_resume(&mut s, true, &b, false, p, p, &mut d, &mut r, &mut w);
        assert_eq!(&d[..4], &[0xf8, 0xff, 0xff, 0xff]);
        assert_eq!(&d[..4], &r[..4]);
        assert_eq!(&d[..4], &w[..4]);
        assert_eq!((r[4], w[4]), (0, 0));
    }

    #[test]
    fn resume_dirty_bitmap_recalculates_its_regions() {
        let b = bits(0, 15, 32);
        let (mut d, mut r, mut w) = ([0u8; 4096], [0u8; 4096], [0u8; 4096]);
        let mut s = sb();
        s.flags |= SB_FLAG_DIRTY_BITMAP;
        s.log2_blocks_per_bitmap_bit = 15;
        let p = s.provided_data_sectors;
        // Clean although marked: nothing to do but write the superblock.
        let res = on_resume(&mut s, true, &b, false, p, p, &mut d, &mut r, &mut w);
        assert!(!res.write_bitmap && res.write_superblock && !s.has(SB_FLAG_RECALCULATING));
        d[0] = 0x24;
        let res = on_resume(&mut s, true, &b, false, p, p, &mut d, &mut r, &mut w);
        assert!(!res.write_bitmap);
        assert!(s.has(SB_FLAG_RECALCULATING) && s.recalc_sector == 0);
        assert_eq!((r[0], w[0]), (0x24, 0x24));
        // Another granularity: everything is dirty.
        let mut s2 = sb();
        s2.flags |= SB_FLAG_DIRTY_BITMAP;
        s2.log2_blocks_per_bitmap_bit = 12;
        let res = on_resume(&mut s2, true, &b, false, p, p, &mut d, &mut r, &mut w);
        assert!(res.write_bitmap && s2.has(SB_FLAG_RECALCULATING));
        assert_eq!(s2.log2_blocks_per_bitmap_bit, 15);
        assert_eq!(&d[..5], &[0xff, 0xff, 0xff, 0xff, 0]);
    }

    #[test]
    fn resume_dirty_bitmap_in_direct_mode() {
        let b = bits(0, 15, 32);
        let mut d = [0u8; 4096];
        let mut s = sb();
        s.flags |= SB_FLAG_DIRTY_BITMAP;
        s.log2_blocks_per_bitmap_bit = 15;
        s.version = 3;
        let p = s.provided_data_sectors;
        let res = on_resume(&mut s, false, &b, false, p, p, &mut d, &mut [], &mut []);
        assert_eq!(
            res,
            Resume {
                write_bitmap: false,
                write_empty_journal: true,
                write_superblock: true
            }
        );
        assert!(!s.has(SB_FLAG_DIRTY_BITMAP) && !s.has(SB_FLAG_RECALCULATING));
        s.flags |= SB_FLAG_DIRTY_BITMAP;
        d[3] = 1;
        on_resume(&mut s, false, &b, false, p, p, &mut d, &mut [], &mut []);
        assert!(!s.has(SB_FLAG_DIRTY_BITMAP) && s.has(SB_FLAG_RECALCULATING));
    }

    #[test]
    fn resume_after_growth_marks_the_new_sectors() {
        let b = bits(0, 15, 32);
        let (mut d, mut r, mut w) = ([0u8; 4096], [0u8; 4096], [0u8; 4096]);
        let mut s = sb();
        s.flags |= SB_FLAG_DIRTY_BITMAP;
        s.log2_blocks_per_bitmap_bit = 15;
        let res = on_resume(
            &mut s,
            true,
            &b,
            false,
            4 << 15,
            6 << 15,
            &mut d,
            &mut r,
            &mut w,
        );
        assert!(res.write_bitmap && res.write_superblock);
        assert_eq!(s.provided_data_sectors, 6 << 15);
        assert_eq!(r[0], 0x30);
        assert!(s.has(SB_FLAG_RECALCULATING));
    }

    #[test]
    fn empty_journal_sectors() {
        // crc32c tags on 512-byte blocks: 24-byte entries, 21 per sector.
        let shape = JournalShape::new(4, 0, false).unwrap();
        let mut s = [0u8; 512];
        empty_journal_sector(&shape, 2, 3, &mut s);
        for k in 0..21 {
            let e = &s[k * 24..k * 24 + 24];
            assert_eq!(&e[..8], &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
            assert!(e[8..].iter().all(|x| *x == 0));
        }
        assert_eq!(
            u64::from_le_bytes(s[504..].try_into().unwrap()),
            0x1111_1113_1111_1112
        );
        // A data sector: zeroes and the commit id only.
        empty_journal_sector(&shape, 0, 8, &mut s);
        assert!(s[..504].iter().all(|x| *x == 0));
        assert_eq!(
            u64::from_le_bytes(s[504..].try_into().unwrap()),
            0x1111_1111_1111_1119
        );
    }
}
