// SPDX-License-Identifier: GPL-2.0

//! dm-integrity's on-disk superblock: parsed and written bit for bit, and checked against the
//! table line the way dm-integrity's constructor checks it.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`.
//!
//! The superblock is the first 64 bytes of the device (of the metadata device when there is
//! one), little-endian; the rest of its 8-sector area is zero, except for the journal MAC of the
//! superblock at the end of sector 0 when `SB_FLAG_FIXED_HMAC` and a journal MAC are in use.
//!
//! ```text
//! offset size field
//!      0    8 magic "integrt\0"
//!      8    1 version (1 to 7)
//!      9    1 log2_interleave_sectors
//!     10    2 integrity_tag_size
//!     12    4 journal_sections
//!     16    8 provided_data_sectors
//!     24    4 flags
//!     28    1 log2_sectors_per_block
//!     29    1 log2_blocks_per_bitmap_bit
//!     30    2 pad
//!     32    8 recalc_sector
//!     40    8 pad
//!     48   16 salt
//! ```

use core::ffi::CStr;

/// The magic opening a superblock.
pub const MAGIC: [u8; 8] = *b"integrt\0";

/// Size of the superblock structure in bytes.
pub const SUPERBLOCK_SIZE: usize = 64;

/// Sectors reserved for the superblock at the start of the device.
pub const SB_SECTORS: u32 = 8;

/// Size of the salt used by `fix_hmac`.
pub const SALT_SIZE: usize = 16;

/// The newest superblock version dm-integrity 1.15 (Linux 7.3) writes and reads.
pub const MAX_VERSION: u8 = 7;

/// Largest block: 8 sectors (`MAX_SECTORS_PER_BLOCK`).
pub const MAX_LOG2_SECTORS_PER_BLOCK: u8 = 3;

/// Smallest and largest interleave (log2 of sectors) without a metadata device.
pub const MIN_LOG2_INTERLEAVE_SECTORS: u8 = 3;
/// See [`MIN_LOG2_INTERLEAVE_SECTORS`].
pub const MAX_LOG2_INTERLEAVE_SECTORS: u8 = 31;

/// The journal has a MAC (`journal_mac`) (v1).
pub const SB_FLAG_HAVE_JOURNAL_MAC: u32 = 0x1;
/// Tags are being recalculated; `recalc_sector` is the position (v2).
pub const SB_FLAG_RECALCULATING: u32 = 0x2;
/// The journal area holds the dirty bitmap of B mode (v3).
pub const SB_FLAG_DIRTY_BITMAP: u32 = 0x4;
/// Metadata runs are padded to 4 KiB rather than 128 KiB (`fix_padding`) (v4).
pub const SB_FLAG_FIXED_PADDING: u32 = 0x8;
/// HMACs cover the sector number and the salt (`fix_hmac`) (v5).
pub const SB_FLAG_FIXED_HMAC: u32 = 0x10;
/// Tags are kept in the device's own integrity metadata (mode `I`) (v6).
pub const SB_FLAG_INLINE: u32 = 0x20;
/// Discarded blocks get a keyed tag (`allow_discards_keyed`) (v7).
pub const SB_FLAG_DISCARD_KEYED: u32 = 0x40;

/// Every flag dm-integrity 1.15 knows.
pub const KNOWN_FLAGS: u32 = 0x7f;

/// Why a superblock was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockError {
    /// Fewer than [`SUPERBLOCK_SIZE`] bytes were given.
    TooShort,
    /// No magic, and the superblock area is not all zero: not a dm-integrity device (a zeroed
    /// area is a device to format, see [`probe`]).
    NotInitialized,
    /// The version is 0 or newer than [`MAX_VERSION`].
    UnknownVersion,
}

impl SuperblockError {
    /// The message dm-integrity reports (`ti->error`).
    pub fn message(self) -> &'static CStr {
        match self {
            Self::TooShort => c"Error reading superblock",
            Self::NotInitialized => c"The device is not initialized",
            Self::UnknownVersion => c"Unknown version",
        }
    }
}

/// What the start of a device holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A superblock.
    Superblock(Superblock),
    /// No magic, but the whole superblock area is zero: dm-integrity formats such a device.
    Blank,
}

/// Reads the superblock area (`area` is the device's first [`SB_SECTORS`] sectors, or at least
/// its first [`SUPERBLOCK_SIZE`] bytes): a superblock, a blank device, or an error.
///
/// Like dm-integrity, only a device whose whole area is zero counts as blank, and recovery mode
/// (`R`) does not care (the caller decides).
pub fn probe(area: &[u8]) -> Result<Probe, SuperblockError> {
    let head = area
        .get(..SUPERBLOCK_SIZE)
        .ok_or(SuperblockError::TooShort)?;
    if head.get(..8) != Some(&MAGIC[..]) {
        return if area.iter().all(|&b| b == 0) {
            Ok(Probe::Blank)
        } else {
            Err(SuperblockError::NotInitialized)
        };
    }
    Superblock::parse(area).map(Probe::Superblock)
}

/// A dm-integrity superblock, field by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    /// Format version, 1 to [`MAX_VERSION`]: the oldest that has every feature in use.
    pub version: u8,
    /// log2 of the data sectors between two metadata areas (0 with a metadata device).
    pub log2_interleave_sectors: u8,
    /// Bytes of tag per block.
    pub integrity_tag_size: u16,
    /// Number of journal sections.
    pub journal_sections: u32,
    /// Data sectors the device provides (what userspace maps).
    pub provided_data_sectors: u64,
    /// `SB_FLAG_*`.
    pub flags: u32,
    /// log2 of the sectors per block (0 to 3).
    pub log2_sectors_per_block: u8,
    /// log2 of the blocks one bit of the B-mode bitmap covers.
    pub log2_blocks_per_bitmap_bit: u8,
    /// Recalculation position (sectors), meaningful with [`SB_FLAG_RECALCULATING`].
    pub recalc_sector: u64,
    /// Salt of `fix_hmac`.
    pub salt: [u8; SALT_SIZE],
}

fn le<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    if let Some(src) = buf.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

impl Superblock {
    /// Parses a superblock from the first [`SUPERBLOCK_SIZE`] bytes of `buf`: the magic must
    /// be there and the version known (what dm-integrity checks before anything else). The
    /// padding is not checked (dm-integrity ignores it).
    pub fn parse(buf: &[u8]) -> Result<Self, SuperblockError> {
        let buf = buf
            .get(..SUPERBLOCK_SIZE)
            .ok_or(SuperblockError::TooShort)?;
        if buf.get(..8) != Some(&MAGIC[..]) {
            return Err(SuperblockError::NotInitialized);
        }
        let sb = Self {
            version: buf[8],
            log2_interleave_sectors: buf[9],
            integrity_tag_size: u16::from_le_bytes(le(buf, 10)),
            journal_sections: u32::from_le_bytes(le(buf, 12)),
            provided_data_sectors: u64::from_le_bytes(le(buf, 16)),
            flags: u32::from_le_bytes(le(buf, 24)),
            log2_sectors_per_block: buf[28],
            log2_blocks_per_bitmap_bit: buf[29],
            recalc_sector: u64::from_le_bytes(le(buf, 32)),
            salt: le(buf, 48),
        };
        if sb.version == 0 || sb.version > MAX_VERSION {
            return Err(SuperblockError::UnknownVersion);
        }
        Ok(sb)
    }

    /// Writes the superblock into the first [`SUPERBLOCK_SIZE`] bytes of `out` (padding zero);
    /// the rest of `out` is left alone. Returns `None` if `out` is too short.
    pub fn write(&self, out: &mut [u8]) -> Option<()> {
        let out = out.get_mut(..SUPERBLOCK_SIZE)?;
        out.fill(0);
        out[..8].copy_from_slice(&MAGIC);
        out[8] = self.version;
        out[9] = self.log2_interleave_sectors;
        out[10..12].copy_from_slice(&self.integrity_tag_size.to_le_bytes());
        out[12..16].copy_from_slice(&self.journal_sections.to_le_bytes());
        out[16..24].copy_from_slice(&self.provided_data_sectors.to_le_bytes());
        out[24..28].copy_from_slice(&self.flags.to_le_bytes());
        out[28] = self.log2_sectors_per_block;
        out[29] = self.log2_blocks_per_bitmap_bit;
        out[32..40].copy_from_slice(&self.recalc_sector.to_le_bytes());
        out[48..64].copy_from_slice(&self.salt);
        Some(())
    }

    /// The superblock as bytes.
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut out = [0; SUPERBLOCK_SIZE];
        // Cannot fail: the buffer has the right size.
        let _ = self.write(&mut out);
        out
    }

    /// Whether all of `flag` is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag == flag
    }

    /// Sets the version to the oldest that knows every feature in use, as dm-integrity does
    /// each time it writes the superblock (`sb_set_version`). `bitmap_mode` is the table's mode
    /// `B`, `meta_device` whether the metadata is on a device of its own.
    pub fn set_version(&mut self, bitmap_mode: bool, meta_device: bool) {
        self.version = if self.has(SB_FLAG_DISCARD_KEYED) {
            7
        } else if self.has(SB_FLAG_INLINE) {
            6
        } else if self.has(SB_FLAG_FIXED_HMAC) {
            5
        } else if self.has(SB_FLAG_FIXED_PADDING) {
            4
        } else if bitmap_mode || self.has(SB_FLAG_DIRTY_BITMAP) {
            3
        } else if meta_device || self.has(SB_FLAG_RECALCULATING) {
            2
        } else {
            1
        };
    }

    /// Whether `self` (read again on resume) has the layout of `loaded` (read by the
    /// constructor): dm-integrity's `superblock_changed`, negated. Only what the driver never
    /// rewrites is compared: version, provided sectors, recalculation, dirty bitmap, its
    /// granularity and keyed discards may change.
    pub fn same_layout(&self, loaded: &Superblock) -> bool {
        const IMMUTABLE: u32 =
            SB_FLAG_HAVE_JOURNAL_MAC | SB_FLAG_FIXED_PADDING | SB_FLAG_FIXED_HMAC | SB_FLAG_INLINE;
        self.log2_interleave_sectors == loaded.log2_interleave_sectors
            && self.integrity_tag_size == loaded.integrity_tag_size
            && self.journal_sections == loaded.journal_sections
            && self.log2_sectors_per_block == loaded.log2_sectors_per_block
            && (self.flags ^ loaded.flags) & IMMUTABLE == 0
            && self.salt == loaded.salt
    }

    /// Checks the superblock against the table line, in dm-integrity's order and with its
    /// messages. Sizes against the device are checked by the geometry.
    pub fn check(&self, table: &TableView) -> Result<(), &'static CStr> {
        if self.has(SB_FLAG_INLINE) != table.inline {
            return Err(c"Inline flag mismatch");
        }
        if u32::from(self.integrity_tag_size) != table.tag_size {
            return Err(c"Tag size doesn't match the information in superblock");
        }
        if u32::from(self.log2_sectors_per_block) != table.log2_sectors_per_block {
            return Err(c"Block size doesn't match the information in superblock");
        }
        match (table.inline, self.journal_sections) {
            (false, 0) => return Err(c"Corrupted superblock, journal_sections is 0"),
            (true, n) if n != 0 => return Err(c"Corrupted superblock, journal_sections is not 0"),
            _ => {}
        }
        let interleave_ok = if table.meta_device {
            self.log2_interleave_sectors == 0
        } else {
            (MIN_LOG2_INTERLEAVE_SECTORS..=MAX_LOG2_INTERLEAVE_SECTORS)
                .contains(&self.log2_interleave_sectors)
        };
        if !interleave_ok {
            return Err(c"Invalid interleave_sectors in the superblock");
        }
        if !table.discard_keyed && self.has(SB_FLAG_DISCARD_KEYED) {
            return Err(c"Keyed discard cannot be disabled once enabled");
        }
        if self.has(SB_FLAG_HAVE_JOURNAL_MAC) != table.journal_mac {
            return Err(c"Journal mac mismatch");
        }
        if table.fix_hmac && !self.has(SB_FLAG_FIXED_HMAC) && table.journal_mac_key {
            return Err(c"fix_hmac is on the command line but not in the superblock");
        }
        Ok(())
    }
}

/// Largest digest of the crypto API (`HASH_MAX_DIGESTSIZE`).
pub const MAX_DIGEST_SIZE: usize = 64;

/// Where the superblock's MAC goes (with `SB_FLAG_FIXED_HMAC` and a journal MAC): the last
/// `mac_size` bytes of sector 0, covering every byte of the sector before them. `None` if such
/// a MAC does not fit (dm-integrity: `digest is too long`).
pub fn superblock_mac_range(mac_size: usize) -> Option<core::ops::Range<usize>> {
    const SECTOR: usize = 512;
    if SUPERBLOCK_SIZE + mac_size > SECTOR || mac_size > MAX_DIGEST_SIZE {
        return None;
    }
    Some(SECTOR - mac_size..SECTOR)
}

/// What [`Superblock::check`] needs to know of the table line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableView {
    /// Mode `I`.
    pub inline: bool,
    /// The tag size in use (given, or the internal hash's digest size).
    pub tag_size: u32,
    /// log2 of the table's `block_size` in sectors.
    pub log2_sectors_per_block: u32,
    /// `meta_device` is given.
    pub meta_device: bool,
    /// `allow_discards_keyed` is given.
    pub discard_keyed: bool,
    /// `journal_mac` is given.
    pub journal_mac: bool,
    /// `journal_mac` has a key.
    pub journal_mac_key: bool,
    /// `fix_hmac` is given.
    pub fix_hmac: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_layout_as_superblock_changed() {
        let a = sample();
        let mut b = a;
        b.version = 3;
        b.provided_data_sectors += 8;
        b.recalc_sector = 0;
        b.log2_blocks_per_bitmap_bit = 15;
        b.flags ^= SB_FLAG_RECALCULATING | SB_FLAG_DIRTY_BITMAP | SB_FLAG_DISCARD_KEYED;
        assert!(b.same_layout(&a));
        for change in [
            |s: &mut Superblock| s.log2_interleave_sectors += 1,
            |s: &mut Superblock| s.integrity_tag_size += 1,
            |s: &mut Superblock| s.journal_sections += 1,
            |s: &mut Superblock| s.log2_sectors_per_block = 0,
            |s: &mut Superblock| s.flags ^= SB_FLAG_FIXED_PADDING,
            |s: &mut Superblock| s.flags ^= SB_FLAG_FIXED_HMAC,
            |s: &mut Superblock| s.flags ^= SB_FLAG_HAVE_JOURNAL_MAC,
            |s: &mut Superblock| s.flags ^= SB_FLAG_INLINE,
            |s: &mut Superblock| s.salt[15] ^= 1,
        ] {
            let mut c = a;
            change(&mut c);
            assert!(!c.same_layout(&a), "{c:?}");
        }
    }

    fn sample() -> Superblock {
        Superblock {
            version: 5,
            log2_interleave_sectors: 15,
            integrity_tag_size: 32,
            journal_sections: 0x0102_0304,
            provided_data_sectors: 0x1122_3344_5566_7788,
            flags: SB_FLAG_FIXED_HMAC | SB_FLAG_RECALCULATING,
            log2_sectors_per_block: 3,
            log2_blocks_per_bitmap_bit: 12,
            recalc_sector: 0x0a0b_0c0d_0e0f_1011,
            salt: *b"0123456789abcdef",
        }
    }

    #[test]
    fn layout_bytes() {
        let b = sample().to_bytes();
        assert_eq!(&b[..8], b"integrt\0");
        assert_eq!(b[8..10], [5, 15]);
        assert_eq!(b[10..12], [32, 0]);
        assert_eq!(b[12..16], [4, 3, 2, 1]);
        assert_eq!(b[16..24], [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(b[24..28], [0x12, 0, 0, 0]);
        assert_eq!(b[28..32], [3, 12, 0, 0]);
        assert_eq!(b[32..40], [0x11, 0x10, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(b[40..48], [0; 8]);
        assert_eq!(&b[48..], b"0123456789abcdef");
        assert_eq!(Superblock::parse(&b), Ok(sample()));
    }

    #[test]
    fn probing() {
        let mut area = [0u8; 4096];
        assert_eq!(probe(&area), Ok(Probe::Blank));
        area[4095] = 1;
        assert_eq!(probe(&area), Err(SuperblockError::NotInitialized));
        sample().write(&mut area).unwrap();
        assert_eq!(probe(&area), Ok(Probe::Superblock(sample())));
        assert_eq!(probe(&area[..63]), Err(SuperblockError::TooShort));
        area[6] = b'T';
        assert_eq!(probe(&area), Err(SuperblockError::NotInitialized));
    }

    #[test]
    fn versions() {
        let mut b = sample().to_bytes();
        for v in 1..=MAX_VERSION {
            b[8] = v;
            assert_eq!(Superblock::parse(&b).unwrap().version, v);
        }
        for v in [0, 8, 255] {
            b[8] = v;
            assert_eq!(Superblock::parse(&b), Err(SuperblockError::UnknownVersion));
        }
        let cases: &[(u32, bool, bool, u8)] = &[
            (0, false, false, 1),
            (0, false, true, 2),
            (SB_FLAG_RECALCULATING, false, false, 2),
            (0, true, false, 3),
            (SB_FLAG_DIRTY_BITMAP, false, true, 3),
            (
                SB_FLAG_FIXED_PADDING | SB_FLAG_RECALCULATING,
                true,
                false,
                4,
            ),
            (SB_FLAG_FIXED_HMAC | SB_FLAG_FIXED_PADDING, false, false, 5),
            (SB_FLAG_INLINE | SB_FLAG_FIXED_HMAC, false, false, 6),
            (SB_FLAG_DISCARD_KEYED, false, false, 7),
        ];
        for &(flags, bitmap, meta, want) in cases {
            let mut sb = Superblock { flags, ..sample() };
            sb.set_version(bitmap, meta);
            assert_eq!(sb.version, want, "{flags:#x} {bitmap} {meta}");
        }
    }

    #[test]
    fn superblock_mac() {
        assert_eq!(superblock_mac_range(32), Some(480..512));
        assert_eq!(superblock_mac_range(64), Some(448..512));
        assert_eq!(superblock_mac_range(0), Some(512..512));
        assert_eq!(superblock_mac_range(65), None);
    }

    #[test]
    fn checks_against_the_table() {
        let sb = Superblock {
            flags: SB_FLAG_HAVE_JOURNAL_MAC,
            ..sample()
        };
        let ok = TableView {
            tag_size: 32,
            log2_sectors_per_block: 3,
            journal_mac: true,
            ..TableView::default()
        };
        assert_eq!(sb.check(&ok), Ok(()));
        let bad: &[(TableView, Superblock, &CStr)] = &[
            (
                TableView { inline: true, ..ok },
                sb,
                c"Inline flag mismatch",
            ),
            (
                TableView { tag_size: 4, ..ok },
                sb,
                c"Tag size doesn't match the information in superblock",
            ),
            (
                TableView {
                    log2_sectors_per_block: 0,
                    ..ok
                },
                sb,
                c"Block size doesn't match the information in superblock",
            ),
            (
                ok,
                Superblock {
                    journal_sections: 0,
                    ..sb
                },
                c"Corrupted superblock, journal_sections is 0",
            ),
            (
                TableView { inline: true, ..ok },
                Superblock {
                    flags: sb.flags | SB_FLAG_INLINE,
                    ..sb
                },
                c"Corrupted superblock, journal_sections is not 0",
            ),
            (
                ok,
                Superblock {
                    log2_interleave_sectors: 2,
                    ..sb
                },
                c"Invalid interleave_sectors in the superblock",
            ),
            (
                ok,
                Superblock {
                    log2_interleave_sectors: 32,
                    ..sb
                },
                c"Invalid interleave_sectors in the superblock",
            ),
            (
                TableView {
                    meta_device: true,
                    ..ok
                },
                sb,
                c"Invalid interleave_sectors in the superblock",
            ),
            (
                ok,
                Superblock {
                    flags: sb.flags | SB_FLAG_DISCARD_KEYED,
                    ..sb
                },
                c"Keyed discard cannot be disabled once enabled",
            ),
            (
                TableView {
                    journal_mac: false,
                    ..ok
                },
                sb,
                c"Journal mac mismatch",
            ),
            (
                TableView {
                    fix_hmac: true,
                    journal_mac_key: true,
                    ..ok
                },
                sb,
                c"fix_hmac is on the command line but not in the superblock",
            ),
        ];
        for (table, sb, want) in bad {
            assert_eq!(sb.check(table), Err(*want), "{table:?} {sb:?}");
        }
        // A metadata device has no interleave.
        let meta = Superblock {
            log2_interleave_sectors: 0,
            ..sb
        };
        let t = TableView {
            meta_device: true,
            ..ok
        };
        assert_eq!(meta.check(&t), Ok(()));
        // fix_hmac without a journal MAC key is not checked against the superblock.
        let t = TableView {
            fix_hmac: true,
            ..ok
        };
        assert_eq!(sb.check(&t), Ok(()));
    }
}
