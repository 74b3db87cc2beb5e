// SPDX-License-Identifier: GPL-2.0

//! dm-integrity's layout arithmetic: the journal, the interleaved metadata areas, where the tag
//! of a data sector lives, how many data sectors a device provides, and the B-mode bitmap.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`. All arithmetic is checked: a layout that
//! would overflow is refused, never wrapped.
//!
//! # Layout (no metadata device)
//!
//! ```text
//! start: superblock (8 sectors) | journal: sections x section_sectors |
//!        area 0: metadata_run sectors of tags | interleave sectors of data |
//!        area 1: metadata_run sectors of tags | interleave sectors of data | ...
//! ```
//!
//! A journal section is 8 sectors of entries (each entry: the data sector number, the last
//! 8 bytes of each data sector of the block, the tag) followed by the data of its entries.
//! `initial_sectors` is the superblock plus the journal. A metadata run holds the tags of the
//! `interleave_sectors` data sectors after it, padded to 128 KiB (to 4 KiB with
//! `SB_FLAG_FIXED_PADDING`).
//!
//! With a metadata device, the data device holds only data (at the same sector numbers) and
//! the metadata device holds the superblock, the journal and then every tag in order.

use crate::integrity_superblock::{
    Superblock, MAX_LOG2_INTERLEAVE_SECTORS, MIN_LOG2_INTERLEAVE_SECTORS, SB_FLAG_FIXED_PADDING,
    SB_FLAG_HAVE_JOURNAL_MAC, SB_FLAG_INLINE, SB_SECTORS,
};

const SECTOR_SHIFT: u32 = 9;
const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

/// Sectors of journal entries at the start of each journal section (`JOURNAL_BLOCK_SECTORS`).
pub const JOURNAL_BLOCK_SECTORS: u32 = 8;
/// Bytes of a journal sector available to entries: all but the commit id.
const JOURNAL_SECTOR_DATA: u32 = 512 - 8;
/// Bytes of MAC at the end of each journal sector when the journal has a MAC.
const JOURNAL_MAC_PER_SECTOR: u32 = 8;
/// Journal entries are padded to this many bytes.
const JOURNAL_ENTRY_ROUNDUP: u32 = 8;
/// Padding kept between the initial sectors and the end of the device.
const METADATA_PADDING_SECTORS: u64 = 8;
/// Default interleave when formatting.
pub const DEFAULT_INTERLEAVE_SECTORS: u32 = 32768;
/// The default journal is the device size divided by 2^this ...
const DEFAULT_JOURNAL_SIZE_FACTOR: u32 = 7;
/// ... and at most this many sectors (64-bit kernels).
const DEFAULT_MAX_JOURNAL_SECTORS: u64 = 131072;
/// Default bitmap granularity in sectors (`DEFAULT_SECTORS_PER_BITMAP_BIT`).
pub const DEFAULT_SECTORS_PER_BITMAP_BIT: u64 = 32768;
/// Size of one block of the B-mode bitmap, in bytes.
pub const BITMAP_BLOCK_SIZE: u64 = 4096;
/// Largest tag.
pub const MAX_TAG_SIZE: u32 = 255;

/// A layout dm-integrity would refuse, with its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The device cannot hold the superblock, the journal, the tags and the provided data.
    TooSmall,
    /// Formatting found no layout at all.
    CannotInitialize,
}

impl LayoutError {
    /// The message dm-integrity reports (`ti->error`).
    pub fn message(self) -> &'static core::ffi::CStr {
        match self {
            Self::TooSmall => c"The device is too small",
            Self::CannotInitialize => c"Could not initialize superblock",
        }
    }
}

/// The shape of a journal section, which depends on the tag size, the block size and whether
/// the journal has a MAC (`calculate_journal_section_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalShape {
    /// Bytes of one journal entry.
    pub entry_size: u32,
    /// Entries in one journal sector.
    pub entries_per_sector: u32,
    /// Entries in one section.
    pub section_entries: u32,
    /// Sectors of one section: the entry sectors and the data of every entry.
    pub section_sectors: u32,
}

impl JournalShape {
    /// The shape for `tag_size`-byte tags on blocks of `2^log2_sectors_per_block` sectors.
    pub fn new(tag_size: u32, log2_sectors_per_block: u32, journal_mac: bool) -> Option<Self> {
        if log2_sectors_per_block > 3 || tag_size > MAX_TAG_SIZE {
            return None;
        }
        let sectors_per_block = 1u32 << log2_sectors_per_block;
        // The sector number, then the last 8 bytes of each sector of the block, then the tag.
        let raw = 8 + 8 * sectors_per_block + tag_size;
        let entry_size = raw.div_ceil(JOURNAL_ENTRY_ROUNDUP) * JOURNAL_ENTRY_ROUNDUP;
        let space = JOURNAL_SECTOR_DATA
            - if journal_mac {
                JOURNAL_MAC_PER_SECTOR
            } else {
                0
            };
        let entries_per_sector = space / entry_size;
        let section_entries = entries_per_sector * JOURNAL_BLOCK_SECTORS;
        let section_sectors = (section_entries << log2_sectors_per_block) + JOURNAL_BLOCK_SECTORS;
        Some(Self {
            entry_size,
            entries_per_sector,
            section_entries,
            section_sectors,
        })
    }
}

impl JournalShape {
    /// Where entry `n` of a section is: the sector of the section (0 to 7) and the byte in that
    /// sector. Entries are spread over the 8 entry sectors in turn: entry 0 in sector 0,
    /// entry 1 in sector 1, ..., entry 8 after entry 0. `None` past the section's entries.
    pub fn entry_position(&self, n: u32) -> Option<(u32, u32)> {
        if n >= self.section_entries {
            return None;
        }
        let sector = n % JOURNAL_BLOCK_SECTORS;
        Some((sector, n / JOURNAL_BLOCK_SECTORS * self.entry_size))
    }

    /// The first sector of the data of entry `n`, relative to its section.
    pub fn entry_data_sector(&self, n: u32, log2_sectors_per_block: u32) -> Option<u32> {
        if n >= self.section_entries {
            return None;
        }
        Some((n << log2_sectors_per_block) + JOURNAL_BLOCK_SECTORS)
    }
}

/// Byte offset, in each journal sector, of the commit id (its last 8 bytes).
pub const JOURNAL_COMMIT_ID_OFFSET: u32 = JOURNAL_SECTOR_DATA;
/// Byte offset, in each journal entry sector, of its MAC when the journal has one (the 8 bytes
/// before the commit id).
pub const JOURNAL_MAC_OFFSET: u32 = JOURNAL_SECTOR_DATA - JOURNAL_MAC_PER_SECTOR;

/// The parameters of a layout: the superblock's fields that shape it, and the table's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Bytes of tag per block.
    pub tag_size: u32,
    /// log2 of sectors per block, 0 to 3.
    pub log2_sectors_per_block: u32,
    /// log2 of the interleave (0 with a metadata device).
    pub log2_interleave_sectors: u32,
    /// Journal sections.
    pub journal_sections: u32,
    /// The journal has a MAC.
    pub journal_mac: bool,
    /// Metadata runs padded to 4 KiB (`SB_FLAG_FIXED_PADDING`).
    pub fixed_padding: bool,
    /// Mode `I` (no journal, no interleave: tags inline).
    pub inline: bool,
    /// The metadata is on a device of its own.
    pub meta_device: bool,
    /// The table's `<reserved_sectors>` (`start`): sectors skipped on the data device.
    pub start: u64,
    /// log2 of the metadata buffer size in sectors (`buffer_sectors`).
    pub log2_buffer_sectors: u32,
}

impl Params {
    /// The parameters a superblock records, with the table's.
    pub fn from_superblock(
        sb: &Superblock,
        meta_device: bool,
        start: u64,
        log2_buffer_sectors: u32,
    ) -> Self {
        Self {
            tag_size: sb.integrity_tag_size.into(),
            log2_sectors_per_block: sb.log2_sectors_per_block.into(),
            log2_interleave_sectors: sb.log2_interleave_sectors.into(),
            journal_sections: sb.journal_sections,
            journal_mac: sb.has(SB_FLAG_HAVE_JOURNAL_MAC),
            fixed_padding: sb.has(SB_FLAG_FIXED_PADDING),
            inline: sb.has(SB_FLAG_INLINE),
            meta_device,
            start,
            log2_buffer_sectors,
        }
    }
}

/// A layout that fits its device (`calculate_device_limits` succeeded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    params: Params,
    journal: JournalShape,
    provided_data_sectors: u64,
    /// Superblock and journal, in sectors.
    initial_sectors: u32,
    /// Sectors of tags before each interleave area (1 with a metadata device).
    metadata_run: u32,
}

impl Geometry {
    /// Lays out `provided_data_sectors` data sectors with `params` on devices of
    /// `data_device_sectors` and `meta_device_sectors` sectors (the same number without a
    /// metadata device): dm-integrity's `calculate_device_limits`.
    pub fn new(
        params: Params,
        provided_data_sectors: u64,
        meta_device_sectors: u64,
    ) -> Result<Self, LayoutError> {
        const E: LayoutError = LayoutError::TooSmall;
        let journal = JournalShape::new(
            params.tag_size,
            params.log2_sectors_per_block,
            params.journal_mac,
        )
        .ok_or(E)?;
        let initial = u64::from(journal.section_sectors)
            .checked_mul(params.journal_sections.into())
            .and_then(|s| s.checked_add(SB_SECTORS.into()))
            .ok_or(E)?;
        if initial.saturating_add(METADATA_PADDING_SECTORS) >= meta_device_sectors {
            return Err(E);
        }
        let initial_sectors = u32::try_from(initial).map_err(|_| E)?;
        let mut geometry = Self {
            params,
            journal,
            provided_data_sectors,
            initial_sectors,
            metadata_run: 1,
        };
        if params.inline {
            if initial.checked_add(provided_data_sectors).ok_or(E)? > meta_device_sectors {
                return Err(E);
            }
        } else if !params.meta_device {
            let log2_i = params.log2_interleave_sectors;
            if !(u32::from(MIN_LOG2_INTERLEAVE_SECTORS)..=u32::from(MAX_LOG2_INTERLEAVE_SECTORS))
                .contains(&log2_i)
            {
                return Err(E);
            }
            // Compatibility: old volumes pad each run to 128 KiB.
            let padding: u64 = if params.fixed_padding {
                METADATA_PADDING_SECTORS << SECTOR_SHIFT
            } else {
                SECTOR_SIZE << METADATA_PADDING_SECTORS
            };
            let tag_bytes = u64::from(params.tag_size)
                << log2_i.checked_sub(params.log2_sectors_per_block).ok_or(E)?;
            let run = (tag_bytes.div_ceil(padding) * padding) >> SECTOR_SHIFT;
            geometry.metadata_run = u32::try_from(run).map_err(|_| E)?;
            let last = provided_data_sectors.checked_sub(1).ok_or(E)?;
            let last_sector = geometry.data_sector(last).ok_or(E)?;
            if last_sector < params.start || last_sector >= meta_device_sectors {
                return Err(E);
            }
        } else {
            let bytes = (provided_data_sectors >> params.log2_sectors_per_block)
                .checked_mul(params.tag_size.into())
                .ok_or(E)?;
            let meta = bytes.div_ceil(SECTOR_SIZE << params.log2_buffer_sectors)
                << params.log2_buffer_sectors;
            if initial.checked_add(meta).ok_or(E)? > meta_device_sectors {
                return Err(E);
            }
        }
        Ok(geometry)
    }

    /// The parameters laid out.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The journal section shape.
    pub fn journal(&self) -> JournalShape {
        self.journal
    }

    /// Journal entries in the whole journal.
    pub fn journal_entries(&self) -> u64 {
        u64::from(self.journal.section_entries) * u64::from(self.params.journal_sections)
    }

    /// Data sectors provided.
    pub fn provided_data_sectors(&self) -> u64 {
        self.provided_data_sectors
    }

    /// Superblock and journal, in sectors, from `start` (on the metadata device if any).
    pub fn initial_sectors(&self) -> u32 {
        self.initial_sectors
    }

    /// The first sector of journal section `section` on the metadata device (the data device
    /// without one), counting `start`.
    pub fn journal_section_start(&self, section: u32) -> Option<u64> {
        if section >= self.params.journal_sections {
            return None;
        }
        let offset = u64::from(section) * u64::from(self.journal.section_sectors);
        self.params
            .start
            .checked_add(SB_SECTORS.into())?
            .checked_add(offset)
    }

    /// Sectors of tags in front of each interleave area.
    pub fn metadata_run(&self) -> u32 {
        self.metadata_run
    }

    /// The interleave area of a data sector and its offset in it (`get_area_and_offset`).
    pub fn area_and_offset(&self, data_sector: u64) -> (u64, u64) {
        if self.params.meta_device {
            (0, data_sector)
        } else {
            let log2_i = self.params.log2_interleave_sectors;
            (data_sector >> log2_i, data_sector & ((1u64 << log2_i) - 1))
        }
    }

    /// Where logical `data_sector` is stored on the data device (`get_data_sector`).
    pub fn data_sector(&self, data_sector: u64) -> Option<u64> {
        let (area, offset) = self.area_and_offset(data_sector);
        if self.params.meta_device {
            return Some(offset);
        }
        let area_start = area.checked_mul(1u64 << self.params.log2_interleave_sectors)?;
        let runs = area.checked_add(1)?.checked_mul(self.metadata_run.into())?;
        area_start
            .checked_add(runs)?
            .checked_add(self.initial_sectors.into())?
            .checked_add(offset)?
            .checked_add(self.params.start)
    }

    /// The logical data sector stored at `sector` of the data device: the inverse of
    /// [`Geometry::data_sector`]; `None` for a sector that holds no data (superblock, journal,
    /// tags) or lies past the provided data.
    pub fn logical_sector(&self, sector: u64) -> Option<u64> {
        let first = self.params.start.checked_add(self.initial_sectors.into())?;
        let rel = sector.checked_sub(first)?;
        let logical = if self.params.meta_device {
            sector.checked_sub(self.params.start)?
        } else {
            let log2_i = self.params.log2_interleave_sectors;
            let area_sectors = (1u64 << log2_i).checked_add(self.metadata_run.into())?;
            let area = rel / area_sectors;
            let offset = (rel % area_sectors).checked_sub(self.metadata_run.into())?;
            (area << log2_i) | offset
        };
        (logical < self.provided_data_sectors).then_some(logical)
    }

    /// Where the tag of logical `data_sector` is, the way dm-integrity addresses it: the
    /// metadata buffer (of `2^log2_buffer_sectors` sectors, counted from
    /// `start + initial_sectors` on the metadata device) and the byte offset in that buffer
    /// (`get_metadata_sector_and_offset`). `data_sector` must start a block.
    pub fn tag_buffer_and_offset(&self, data_sector: u64) -> Option<(u64, u32)> {
        let (area, offset) = self.area_and_offset(data_sector);
        let lbs = self.params.log2_buffer_sectors;
        let area_sectors =
            (1u64 << self.params.log2_interleave_sectors).checked_add(self.metadata_run.into())?;
        let mut buffer = area.checked_mul(area_sectors)? >> lbs;
        let tag_byte = (offset >> self.params.log2_sectors_per_block)
            .checked_mul(self.params.tag_size.into())?;
        buffer = buffer.checked_add(tag_byte >> (SECTOR_SHIFT + lbs))?;
        let in_buffer = tag_byte & ((SECTOR_SIZE << lbs) - 1);
        Some((buffer, u32::try_from(in_buffer).ok()?))
    }

    /// The byte on the metadata device (the data device without one) where the tag of
    /// logical `data_sector` starts.
    pub fn tag_position(&self, data_sector: u64) -> Option<u64> {
        let (buffer, in_buffer) = self.tag_buffer_and_offset(data_sector)?;
        let first = self.params.start.checked_add(self.initial_sectors.into())?;
        first
            .checked_add(buffer.checked_mul(1u64 << self.params.log2_buffer_sectors)?)?
            .checked_mul(SECTOR_SIZE)?
            .checked_add(in_buffer.into())
    }

    /// Sectors of the metadata device in use: the initial sectors and every tag.
    pub fn metadata_end(&self) -> Option<u64> {
        let last = self.provided_data_sectors.checked_sub(1)?;
        let last_block =
            last >> self.params.log2_sectors_per_block << self.params.log2_sectors_per_block;
        let end = self
            .tag_position(last_block)?
            .checked_add(self.params.tag_size.into())?;
        Some(end.div_ceil(SECTOR_SIZE))
    }
}

/// How many data sectors a device provides with `params` (`get_provided_data_sectors`): without
/// a metadata device, the most that fits, found bit by bit from the top as dm-integrity does;
/// with one, the data device rounded down to a block. Zero when nothing fits.
pub fn provided_data_sectors(
    params: Params,
    data_device_sectors: u64,
    meta_device_sectors: u64,
) -> u64 {
    if params.meta_device {
        return data_device_sectors & !((1u64 << params.log2_sectors_per_block) - 1);
    }
    if meta_device_sectors == 0 {
        return 0;
    }
    let mut provided = 0u64;
    let top = 63 - meta_device_sectors.leading_zeros();
    for bit in (3..=top).rev() {
        let candidate = provided | 1u64 << bit;
        if Geometry::new(params, candidate, meta_device_sectors).is_ok() {
            provided = candidate;
        }
    }
    provided
}

/// Lays out a formatted device as dm-integrity's constructor does: the data sectors it
/// provides, then the layout, retrying with smaller metadata buffers (down to 8 sectors) when a
/// metadata device is too small for the tags in large ones; then the buffer size is capped by
/// the alignment of the metadata runs ([`effective_log2_buffer_sectors`]).
pub fn open(
    sb: &Superblock,
    meta_device_sectors: Option<u64>,
    data_device_sectors: u64,
    start: u64,
    log2_buffer_sectors: u32,
) -> Result<Geometry, LayoutError> {
    let meta_device = meta_device_sectors.is_some();
    let meta_sectors = meta_device_sectors.unwrap_or(data_device_sectors);
    let mut params = Params::from_superblock(sb, meta_device, start, log2_buffer_sectors);
    let provided = provided_data_sectors(params, data_device_sectors, meta_sectors);
    if provided == 0 {
        return Err(LayoutError::TooSmall);
    }
    let geometry = loop {
        match Geometry::new(params, provided, meta_sectors) {
            Ok(g) => break g,
            Err(e) if !meta_device || params.log2_buffer_sectors <= 3 => return Err(e),
            Err(_) => params.log2_buffer_sectors -= 1,
        }
    };
    params.log2_buffer_sectors = effective_log2_buffer_sectors(&geometry);
    Geometry::new(params, provided, meta_sectors)
}

/// The journal size dm-integrity asks for when the table gives none: 1/128 of the data device,
/// at most 64 MiB.
pub fn default_journal_sectors(data_device_sectors: u64) -> u32 {
    // At most DEFAULT_MAX_JOURNAL_SECTORS, which fits.
    (data_device_sectors >> DEFAULT_JOURNAL_SIZE_FACTOR).min(DEFAULT_MAX_JOURNAL_SECTORS) as u32
}

/// What formatting needs besides the devices' sizes (`initialize_superblock`'s inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// Tag size in use.
    pub tag_size: u32,
    /// log2 of sectors per block.
    pub log2_sectors_per_block: u32,
    /// Journal size asked for, in sectors (the table's, or [`default_journal_sectors`]).
    pub journal_sectors: u32,
    /// Interleave asked for (`interleave_sectors`; 0 for the default).
    pub interleave_sectors: u32,
    /// `journal_mac` is given.
    pub journal_mac: bool,
    /// `fix_padding` is given.
    pub fix_padding: bool,
    /// `fix_hmac` is given and there is an internal hash or a journal MAC: the superblock gets
    /// `SB_FLAG_FIXED_HMAC` and the caller fills the salt with random bytes.
    pub fixed_hmac: bool,
    /// `allow_discards_keyed` is given.
    pub discard_keyed: bool,
    /// Mode `I`.
    pub inline: bool,
    /// Mode `B`.
    pub bitmap_mode: bool,
    /// The table's start.
    pub start: u64,
    /// log2 of buffer sectors (may shrink with a metadata device).
    pub log2_buffer_sectors: u32,
}

/// A freshly formatted superblock and the buffer size formatting settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formatted {
    /// The superblock to write (salt zero: the caller fills it when `fixed_hmac`).
    pub superblock: Superblock,
    /// log2 of the buffer sectors after formatting (smaller than asked for if the metadata
    /// device is small).
    pub log2_buffer_sectors: u32,
}

/// Formats a blank device: the superblock dm-integrity writes (`initialize_superblock`), with
/// `meta_device_sectors` `None` when there is no metadata device. `log2_blocks_per_bitmap_bit`
/// is left 0; see [`bitmap`].
pub fn initialize(
    f: &Format,
    data_device_sectors: u64,
    meta_device_sectors: Option<u64>,
) -> Result<Formatted, LayoutError> {
    use crate::integrity_superblock::{SB_FLAG_DISCARD_KEYED, SB_FLAG_FIXED_HMAC};
    const E: LayoutError = LayoutError::CannotInitialize;
    let meta_device = meta_device_sectors.is_some();
    let meta_sectors = meta_device_sectors.unwrap_or(data_device_sectors);
    let mut flags = 0;
    if f.inline {
        flags |= SB_FLAG_INLINE;
    }
    if f.journal_mac {
        flags |= SB_FLAG_HAVE_JOURNAL_MAC;
    }
    if f.fixed_hmac {
        flags |= SB_FLAG_FIXED_HMAC;
    }
    if f.discard_keyed {
        flags |= SB_FLAG_DISCARD_KEYED;
    }
    let shape = JournalShape::new(f.tag_size, f.log2_sectors_per_block, f.journal_mac).ok_or(E)?;
    let wanted_sections = match f.journal_sectors / shape.section_sectors {
        _ if f.inline => 0,
        0 => 1,
        n => n,
    };
    let mut params = Params {
        tag_size: f.tag_size,
        log2_sectors_per_block: f.log2_sectors_per_block,
        log2_interleave_sectors: 0,
        journal_sections: wanted_sections,
        journal_mac: f.journal_mac,
        fixed_padding: false,
        inline: f.inline,
        meta_device,
        start: f.start,
        log2_buffer_sectors: f.log2_buffer_sectors,
    };
    let provided;
    if !meta_device {
        if f.fix_padding {
            flags |= SB_FLAG_FIXED_PADDING;
            params.fixed_padding = true;
        }
        let interleave = match f.interleave_sectors {
            0 => DEFAULT_INTERLEAVE_SECTORS,
            n => n,
        };
        params.log2_interleave_sectors = (31 - interleave.leading_zeros()).clamp(
            MIN_LOG2_INTERLEAVE_SECTORS.into(),
            MAX_LOG2_INTERLEAVE_SECTORS.into(),
        );
        provided = provided_data_sectors(params, data_device_sectors, meta_sectors);
        if provided == 0 {
            return Err(E);
        }
    } else {
        provided = provided_data_sectors(params, data_device_sectors, meta_sectors);
        if provided == 0 {
            return Err(E);
        }
        // The most journal sections (at most those asked for) that fit, bit by bit; with
        // none, retry with smaller buffers.
        loop {
            let mut sections = 0u32;
            let top = 31u32.saturating_sub(wanted_sections.leading_zeros());
            if wanted_sections != 0 {
                for bit in (0..=top).rev() {
                    let candidate = sections | 1 << bit;
                    if candidate > wanted_sections {
                        continue;
                    }
                    let p = Params {
                        journal_sections: candidate,
                        ..params
                    };
                    if Geometry::new(p, provided, meta_sectors).is_ok() {
                        sections = candidate;
                    }
                }
            }
            if sections != 0 {
                params.journal_sections = sections;
                break;
            }
            if params.log2_buffer_sectors > 3 {
                params.log2_buffer_sectors -= 1;
            } else {
                return Err(E);
            }
        }
    }
    let mut superblock = Superblock {
        version: 0,
        log2_interleave_sectors: params.log2_interleave_sectors as u8,
        integrity_tag_size: u16::try_from(f.tag_size).map_err(|_| E)?,
        journal_sections: params.journal_sections,
        provided_data_sectors: provided,
        flags,
        log2_sectors_per_block: f.log2_sectors_per_block as u8,
        log2_blocks_per_bitmap_bit: 0,
        recalc_sector: 0,
        salt: [0; 16],
    };
    superblock.set_version(f.bitmap_mode, meta_device);
    Ok(Formatted {
        superblock,
        log2_buffer_sectors: params.log2_buffer_sectors,
    })
}

/// The B-mode bitmap's granularity and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bitmap {
    /// log2 of the blocks one bit covers.
    pub log2_blocks_per_bit: u32,
    /// Bits in the bitmap.
    pub bits: u64,
    /// 4 KiB bitmap blocks (kept in the journal area).
    pub blocks: u64,
}

impl Bitmap {
    /// The first and last bits covering `sectors` sectors at `sector` (both block-aligned),
    /// with blocks of `2^log2_sectors_per_block` sectors. `None` for an empty range, or one
    /// past the bitmap.
    pub fn bits(
        &self,
        sector: u64,
        sectors: u64,
        log2_sectors_per_block: u32,
    ) -> Option<(u64, u64)> {
        let shift = log2_sectors_per_block + self.log2_blocks_per_bit;
        let last = sector.checked_add(sectors.checked_sub(1)?)?;
        let (first_bit, last_bit) = (sector.checked_shr(shift)?, last.checked_shr(shift)?);
        (last_bit < self.bits).then_some((first_bit, last_bit))
    }

    /// Where a bit is stored in the bitmap's area (the start of the journal): the byte and
    /// the bit in it (the kernel keeps the bitmap in `unsigned long` words, little-endian).
    pub fn position(bit: u64) -> (u64, u32) {
        (bit / 8, (bit % 8) as u32)
    }
}

/// The bitmap of a geometry: `sectors_per_bit` as the table gives it (`None` for the default),
/// made coarse enough to fit in the journal area as dm-integrity does.
pub fn bitmap(geometry: &Geometry, sectors_per_bit: Option<u64>) -> Bitmap {
    let p = geometry.params();
    let mut log2_sectors = match sectors_per_bit {
        None => 63 - DEFAULT_SECTORS_PER_BITMAP_BIT.leading_zeros(),
        Some(0) => 0,
        Some(n) => 63 - n.leading_zeros(),
    };
    log2_sectors = log2_sectors.max(p.log2_sectors_per_block);
    let journal_sectors =
        u64::from(geometry.journal.section_sectors) * u64::from(p.journal_sections);
    let bits_in_journal = journal_sectors
        .checked_shl(SECTOR_SHIFT + 3)
        .filter(|b| *b >> (SECTOR_SHIFT + 3) == journal_sectors)
        .unwrap_or(u64::MAX)
        .min(u32::MAX.into());
    let provided = geometry.provided_data_sectors;
    let bits_for = |log2: u32| {
        if log2 >= 64 {
            return 1;
        }
        let per_bit = 1u64 << log2;
        provided.div_ceil(per_bit)
    };
    if bits_in_journal != 0 {
        while log2_sectors < 63 && bits_in_journal < bits_for(log2_sectors) {
            log2_sectors += 1;
        }
    }
    let log2_blocks_per_bit = log2_sectors - p.log2_sectors_per_block;
    let bits = bits_for(log2_sectors);
    Bitmap {
        log2_blocks_per_bit,
        bits,
        blocks: bits.div_ceil(BITMAP_BLOCK_SIZE * 8),
    }
}

/// The buffer size dm-integrity settles on after laying out: without a metadata device, no
/// larger than the alignment of the metadata run.
pub fn effective_log2_buffer_sectors(geometry: &Geometry) -> u32 {
    let p = geometry.params();
    if p.meta_device {
        p.log2_buffer_sectors
    } else {
        p.log2_buffer_sectors
            .min(geometry.metadata_run().trailing_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(tag_size: u32, log2_spb: u32) -> Params {
        Params {
            tag_size,
            log2_sectors_per_block: log2_spb,
            log2_interleave_sectors: 15,
            journal_sections: 1,
            journal_mac: false,
            fixed_padding: false,
            inline: false,
            meta_device: false,
            start: 0,
            log2_buffer_sectors: 7,
        }
    }

    #[test]
    fn journal_shapes() {
        // 4-byte tags on 512-byte blocks: 8 + 8 + 4 = 20, rounded to 24; 504 / 24 = 21.
        let s = JournalShape::new(4, 0, false).unwrap();
        assert_eq!((s.entry_size, s.entries_per_sector), (24, 21));
        assert_eq!((s.section_entries, s.section_sectors), (168, 176));
        // 32-byte tags on 4 KiB blocks with a MAC: 8 + 64 + 32 = 104; 496 / 104 = 4.
        let s = JournalShape::new(32, 3, true).unwrap();
        assert_eq!((s.entry_size, s.entries_per_sector), (104, 4));
        assert_eq!((s.section_entries, s.section_sectors), (32, 264));
        assert_eq!(JournalShape::new(256, 0, false), None);
        assert_eq!(JournalShape::new(4, 4, false), None);
    }

    #[test]
    fn journal_addressing() {
        let s = JournalShape::new(4, 0, false).unwrap();
        assert_eq!(s.entry_position(0), Some((0, 0)));
        assert_eq!(s.entry_position(7), Some((7, 0)));
        assert_eq!(s.entry_position(8), Some((0, 24)));
        assert_eq!(s.entry_position(167), Some((7, 20 * 24)));
        assert_eq!(s.entry_position(168), None);
        // The last entry ends before the commit id.
        let (_, last) = s.entry_position(167).unwrap();
        assert!(last + s.entry_size <= JOURNAL_COMMIT_ID_OFFSET);
        assert_eq!(s.entry_data_sector(0, 0), Some(8));
        assert_eq!(s.entry_data_sector(167, 0), Some(175));
        assert_eq!(s.entry_data_sector(168, 0), None);
        let s = JournalShape::new(32, 3, true).unwrap();
        let (_, last) = s.entry_position(s.section_entries - 1).unwrap();
        assert!(last + s.entry_size <= JOURNAL_MAC_OFFSET);
        assert_eq!(s.entry_data_sector(31, 3), Some(8 + 31 * 8));
        assert_eq!(s.entry_data_sector(31, 3).unwrap() + 8, s.section_sectors);
        let g = Geometry::new(
            Params {
                start: 10,
                journal_sections: 3,
                ..params(4, 0)
            },
            8,
            1 << 20,
        )
        .unwrap();
        assert_eq!(g.journal_section_start(0), Some(18));
        assert_eq!(g.journal_section_start(2), Some(18 + 2 * 176));
        assert_eq!(g.journal_section_start(3), None);
        assert_eq!(u64::from(g.initial_sectors()), 8 + 3 * 176);
    }

    #[test]
    fn interleaved_layout() {
        let p = params(4, 0);
        let g = Geometry::new(p, 1 << 16, 1 << 20).unwrap();
        // 4 bytes x 32768 sectors = 128 KiB of tags: one 256-sector run.
        assert_eq!(g.metadata_run(), 256);
        assert_eq!(g.initial_sectors(), 8 + 176);
        assert_eq!(g.area_and_offset(32768 + 5), (1, 5));
        assert_eq!(g.data_sector(0), Some(184 + 256));
        assert_eq!(g.data_sector(32768), Some(184 + 256 + 32768 + 256));
        assert_eq!(g.tag_position(0), Some(184 * 512));
        assert_eq!(g.tag_position(3), Some(184 * 512 + 12));
        assert_eq!(g.tag_position(32768), Some((184 + 256 + 32768) * 512));
        // Buffers of 128 sectors: tag 16384 of area 0 is at the start of buffer 1.
        assert_eq!(g.tag_buffer_and_offset(16384), Some((1, 0)));
        assert_eq!(g.tag_buffer_and_offset(16383), Some((0, 65532)));
        // Fixed padding keeps the run to what the tags need, rounded to 4 KiB.
        let g = Geometry::new(
            Params {
                fixed_padding: true,
                tag_size: 3,
                ..p
            },
            1 << 16,
            1 << 20,
        )
        .unwrap();
        assert_eq!(g.metadata_run(), 192);
        // 3-byte tags for 1024 sectors: 3 KiB, padded to 4 KiB (8 sectors), or 128 KiB.
        let small = Params {
            tag_size: 3,
            log2_interleave_sectors: 10,
            ..p
        };
        let g = Geometry::new(
            Params {
                fixed_padding: true,
                ..small
            },
            1 << 16,
            1 << 20,
        )
        .unwrap();
        assert_eq!(g.metadata_run(), 8);
        let g = Geometry::new(small, 1 << 16, 1 << 20).unwrap();
        assert_eq!(g.metadata_run(), 256);
        // A start offset moves the data, not the areas' arithmetic.
        let g = Geometry::new(Params { start: 100, ..p }, 1 << 16, 1 << 20).unwrap();
        assert_eq!(g.data_sector(0), Some(100 + 184 + 256));
        assert_eq!(g.tag_position(0), Some((100 + 184) * 512));
    }

    #[test]
    fn tag_positions_agree_with_buffers() {
        for (tag, spb, lbs, fixed) in [
            (4, 0, 7, false),
            (20, 0, 3, true),
            (32, 3, 5, true),
            (3, 1, 7, false),
        ] {
            let p = Params {
                log2_buffer_sectors: lbs,
                fixed_padding: fixed,
                log2_interleave_sectors: 10,
                ..params(tag, spb)
            };
            let g = Geometry::new(p, 1 << 14, 1 << 18).unwrap();
            let lbs = effective_log2_buffer_sectors(&g);
            let g = Geometry::new(
                Params {
                    log2_buffer_sectors: lbs,
                    ..p
                },
                1 << 14,
                1 << 18,
            )
            .unwrap();
            let mut prev = None;
            for s in (0..(1u64 << 14)).step_by(1 << spb) {
                let pos = g.tag_position(s).unwrap();
                let (area, offset) = g.area_and_offset(s);
                if offset != 0 {
                    assert_eq!(Some(pos), prev.map(|p| p + u64::from(tag)), "{s}");
                }
                // Tags never reach into the data of their area.
                let data_start = g.data_sector(s - offset).unwrap() * 512;
                assert!(pos + u64::from(tag) <= data_start, "{s} {area}");
                prev = Some(pos);
            }
        }
    }

    #[test]
    fn separate_metadata_device() {
        let p = Params {
            meta_device: true,
            log2_interleave_sectors: 0,
            ..params(8, 0)
        };
        let g = Geometry::new(p, 1000, 8 + 176 + 128).unwrap();
        assert_eq!(g.data_sector(999), Some(999));
        assert_eq!(g.tag_position(10), Some(184 * 512 + 80));
        // 1000 tags of 8 bytes: 16 sectors, in 128-sector buffers: 128.
        assert!(Geometry::new(p, 1000, 8 + 176 + 128).is_ok());
        assert_eq!(
            Geometry::new(p, 1000, 8 + 176 + 127),
            Err(LayoutError::TooSmall)
        );
        assert_eq!(
            provided_data_sectors(
                Params {
                    log2_sectors_per_block: 3,
                    ..p
                },
                1001,
                1
            ),
            1000
        );
    }

    #[test]
    fn provided_sectors_fit_exactly() {
        for dev in [1u64 << 15, 65536, 100_000, 1 << 21, 12345 * 8] {
            for (tag, spb) in [(4, 0), (32, 0), (16, 3), (255, 2)] {
                for fixed in [false, true] {
                    let p = Params {
                        fixed_padding: fixed,
                        ..params(tag, spb)
                    };
                    let n = provided_data_sectors(p, dev, dev);
                    assert!(n > 0);
                    let g = Geometry::new(p, n, dev).unwrap();
                    // The last data sector is on the device, and one more would not fit ...
                    assert!(g.data_sector(n - 1).unwrap() < dev);
                    // ... at the granularity dm-integrity searches with (8 sectors).
                    assert!(Geometry::new(p, n + 8, dev).is_err(), "{dev} {tag} {spb}");
                }
            }
        }
        // Too small for anything.
        assert_eq!(
            provided_data_sectors(params(4, 0), 8 + 176 + 8, 8 + 176 + 8),
            0
        );
        assert_eq!(provided_data_sectors(params(4, 0), 0, 0), 0);
    }

    #[test]
    fn no_overflow_on_huge_devices() {
        let p = params(255, 0);
        let n = provided_data_sectors(p, u64::MAX, u64::MAX);
        assert!(n > 0);
        let g = Geometry::new(p, n, u64::MAX).unwrap();
        assert!(g.data_sector(n - 1).is_some());
        assert!(g.tag_buffer_and_offset(n - 1).is_some());
        // A byte position past 2^64 is refused, not wrapped.
        assert_eq!(g.tag_position(n - 1), None);
        let b = bitmap(&g, Some(u64::MAX));
        assert!(b.bits >= 1);
        let mut huge = Params {
            journal_sections: u32::MAX,
            ..p
        };
        assert_eq!(Geometry::new(huge, 8, u64::MAX), Err(LayoutError::TooSmall));
        huge.journal_sections = 1;
        huge.start = u64::MAX - 10;
        assert_eq!(provided_data_sectors(huge, u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn formatting() {
        let f = Format {
            tag_size: 4,
            log2_sectors_per_block: 0,
            journal_sectors: default_journal_sectors(65536),
            interleave_sectors: 0,
            journal_mac: false,
            fix_padding: true,
            fixed_hmac: false,
            discard_keyed: false,
            inline: false,
            bitmap_mode: false,
            start: 0,
            log2_buffer_sectors: 7,
        };
        assert_eq!(f.journal_sectors, 512);
        let sb = initialize(&f, 65536, None).unwrap().superblock;
        assert_eq!(sb.version, 4);
        assert_eq!(sb.log2_interleave_sectors, 15);
        assert_eq!(sb.journal_sections, 512 / 176);
        assert_eq!(sb.flags, SB_FLAG_FIXED_PADDING);
        // The interleave asked for is rounded down to a power of two within 8 ..= 2^31.
        let with = |n| {
            initialize(
                &Format {
                    interleave_sectors: n,
                    ..f
                },
                65536,
                None,
            )
            .unwrap()
        };
        assert_eq!(with(1).superblock.log2_interleave_sectors, 3);
        assert_eq!(with(1000).superblock.log2_interleave_sectors, 9);
        let sb = initialize(
            &Format {
                interleave_sectors: u32::MAX,
                ..f
            },
            1 << 40,
            None,
        );
        assert_eq!(sb.unwrap().superblock.log2_interleave_sectors, 31);
        // A journal smaller than a section still gets one.
        let sb = initialize(
            &Format {
                journal_sectors: 1,
                ..f
            },
            65536,
            None,
        )
        .unwrap()
        .superblock;
        assert_eq!(sb.journal_sections, 1);
        // B mode is version 3 at least; a metadata device version 2.
        let sb = initialize(
            &Format {
                fix_padding: false,
                bitmap_mode: true,
                ..f
            },
            65536,
            None,
        );
        assert_eq!(sb.unwrap().superblock.version, 3);
        let sb = initialize(
            &Format {
                fix_padding: false,
                ..f
            },
            65536,
            Some(4096),
        )
        .unwrap();
        assert_eq!(sb.superblock.version, 2);
        assert_eq!(sb.superblock.log2_interleave_sectors, 0);
        assert_eq!(sb.superblock.provided_data_sectors, 65536);
        // A small metadata device gets fewer journal sections, then smaller buffers.
        // (65536 4-byte tags take 512 sectors; two sections would need 8 + 352 + 512.)
        let small = initialize(
            &Format {
                fix_padding: false,
                ..f
            },
            65536,
            Some(8 + 176 + 512),
        )
        .unwrap();
        assert_eq!(small.superblock.journal_sections, 1);
        assert_eq!(small.log2_buffer_sectors, 7);
        // 1000 4-byte tags fit in one 8-sector buffer, not in one of 16 sectors.
        let smaller = initialize(
            &Format {
                fix_padding: false,
                ..f
            },
            1000,
            Some(8 + 176 + 8 + 1),
        )
        .unwrap();
        assert_eq!(smaller.log2_buffer_sectors, 3);
        assert_eq!(
            initialize(&f, 100, None),
            Err(LayoutError::CannotInitialize)
        );
    }

    #[test]
    fn opening() {
        let f = Format {
            tag_size: 4,
            log2_sectors_per_block: 0,
            journal_sectors: 512,
            interleave_sectors: 0,
            journal_mac: false,
            fix_padding: true,
            fixed_hmac: false,
            discard_keyed: false,
            inline: false,
            bitmap_mode: false,
            start: 0,
            log2_buffer_sectors: 7,
        };
        let sb = initialize(&f, 65536, None).unwrap().superblock;
        let g = open(&sb, None, 65536, 0, 7).unwrap();
        assert_eq!(g.provided_data_sectors(), sb.provided_data_sectors);
        // Runs of 256 sectors allow buffers of up to 256 sectors.
        assert_eq!(g.params().log2_buffer_sectors, 7);
        assert_eq!(
            open(&sb, None, 65536, 0, 12)
                .unwrap()
                .params()
                .log2_buffer_sectors,
            8
        );
        // A device that shrank provides less; one too small for anything is refused.
        assert!(
            open(&sb, None, 40000, 0, 7)
                .unwrap()
                .provided_data_sectors()
                < 40000
        );
        assert_eq!(open(&sb, None, 300, 0, 7), Err(LayoutError::TooSmall));
        // Damaged superblocks: a journal past the end of the device, an interleave out of range.
        let journal_past_end = Superblock {
            journal_sections: 400,
            ..sb
        };
        assert_eq!(
            open(&journal_past_end, None, 65536, 0, 7),
            Err(LayoutError::TooSmall)
        );
        let no_interleave = Superblock {
            log2_interleave_sectors: 0,
            ..sb
        };
        assert_eq!(
            open(&no_interleave, None, 65536, 0, 7),
            Err(LayoutError::TooSmall)
        );
        let huge_tags = Superblock {
            integrity_tag_size: 256,
            ..sb
        };
        assert_eq!(
            open(&huge_tags, None, 65536, 0, 7),
            Err(LayoutError::TooSmall)
        );
        // A small metadata device: smaller buffers until the tags fit.
        let sb = initialize(&f, 1000, Some(193)).unwrap();
        assert_eq!(sb.log2_buffer_sectors, 3);
        let g = open(&sb.superblock, Some(193), 1000, 0, 7).unwrap();
        assert_eq!(g.params().log2_buffer_sectors, 3);
        assert_eq!(g.provided_data_sectors(), 1000);
        assert_eq!(
            open(&sb.superblock, Some(192), 1000, 0, 7),
            Err(LayoutError::TooSmall)
        );
    }

    #[test]
    fn bitmaps() {
        let p = params(4, 0);
        let g = Geometry::new(p, 1 << 20, 1 << 21).unwrap();
        // 2^20 sectors at 32768 per bit: 32 bits, one block.
        assert_eq!(
            bitmap(&g, None),
            Bitmap {
                log2_blocks_per_bit: 15,
                bits: 32,
                blocks: 1
            }
        );
        // Too fine for the journal (176 sectors = 720896 bits): made coarser.
        let b = bitmap(&g, Some(1));
        assert_eq!(b.log2_blocks_per_bit, 1);
        assert_eq!(b.bits, 1 << 19);
        assert_eq!(b.bits(0, 1, 0), Some((0, 0)));
        assert_eq!(b.bits(1, 2, 0), Some((0, 1)));
        assert_eq!(b.bits(4, 4, 0), Some((2, 3)));
        assert_eq!(
            b.bits((1 << 20) - 2, 2, 0),
            Some(((1 << 19) - 1, (1 << 19) - 1))
        );
        assert_eq!(b.bits(1 << 20, 2, 0), None);
        assert_eq!(b.bits(8, 0, 0), None);
        assert_eq!(b.bits(u64::MAX, 2, 0), None);
        assert_eq!(Bitmap::position(0), (0, 0));
        assert_eq!(Bitmap::position(13), (1, 5));
        // Never finer than a block.
        let g = Geometry::new(params(4, 3), 1 << 20, 1 << 21).unwrap();
        assert_eq!(bitmap(&g, Some(0)).log2_blocks_per_bit, 0);
        assert_eq!(bitmap(&g, Some(65536)).log2_blocks_per_bit, 13);
    }

    #[test]
    fn logical_sector_inverts_data_sector() {
        for fixed_padding in [false, true] {
            let params = Params {
                tag_size: 4,
                log2_sectors_per_block: 3,
                log2_interleave_sectors: 15,
                journal_sections: 3,
                journal_mac: false,
                fixed_padding,
                inline: false,
                meta_device: false,
                start: 7,
                log2_buffer_sectors: 7,
            };
            let provided = provided_data_sectors(params, 1 << 18, 1 << 18);
            let g = Geometry::new(params, provided, 1 << 18).unwrap();
            for s in [0, 1, 8, 32767, 32768, 65535, 65536, provided - 1] {
                let p = g.data_sector(s).unwrap();
                assert_eq!(g.logical_sector(p), Some(s), "sector {s}");
            }
            // Superblock, journal and the first area's tags hold no data.
            assert_eq!(g.logical_sector(0), None);
            let first = g.data_sector(0).unwrap();
            assert_eq!(g.logical_sector(first - 1), None);
            assert_eq!(g.logical_sector(g.data_sector(provided - 1).unwrap() + 1), None);
        }
    }

}
