// SPDX-License-Identifier: GPL-2.0

//! dm-integrity's journal (mode `J`) as a resume reads it: the commit ids, which sections a
//! resume replays and what it leaves behind (`replay_journal`), and the entries of a section
//! (`do_journal_write` with `from_replay`).
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`. The caller reads the journal and passes its
//! sectors in.
//!
//! # On disk (dm-integrity 1.15, no journal encryption nor MAC)
//!
//! The journal is `journal_sections` sections of `section_sectors` sectors from `start + 8`.
//! Every journal sector ends with a commit id (8 bytes, little-endian): `COMMIT_IDS[seq]`
//! xored with `(section << 32) ^ sector`, `seq` being the commit sequence (0 to 3) the section
//! was written with. The first 8 sectors of a section hold its entries (entry `n` in sector
//! `n % 8`, at byte `n / 8 * entry_size`); the data of entry `n` follows at section sector
//! `8 + n * sectors_per_block`. An entry is the logical data sector (`u64`, little-endian),
//! the last 8 bytes of each sector of the block (which the commit id took in the journal's
//! copy) and the tag. `sector_hi` (bytes 4 to 7) all ones marks an entry unused; `0xfffffffe`
//! marks an entry being copied in (in memory only: a resume skips it as out of range).
//!
//! # Replay
//!
//! A section is committed when all its sectors carry the same sequence. Sequences advance by
//! one each time the writer wraps round the journal, so the newest sequence in use tells where
//! the oldest committed section starts (after the last section of the newest sequence), and the
//! replay runs from there while every sector carries the sequence expected at that place,
//! stopping at the first torn (mixed) or stale section. Unless the journal is empty, the entries
//! of the sections run over are written in place in order (a later entry of the same block wins).
//! Then the journal is erased (every section written empty with one sequence) unless the whole
//! journal was consistent and either the table is in mode `J` (which goes on writing after it) or
//! it was empty.

use crate::integrity_geometry::{JournalShape, JOURNAL_BLOCK_SECTORS};

/// Sectors of entries at the start of each section (`JOURNAL_BLOCK_SECTORS`).
pub const JOURNAL_ENTRY_SECTORS: u32 = JOURNAL_BLOCK_SECTORS;

/// Commit sequences.
pub const N_COMMIT_IDS: usize = 4;

/// The commit ids of an unencrypted journal (`commit_ids[]`, sequence 0 to 3).
pub const COMMIT_IDS: [u64; N_COMMIT_IDS] = [
    0x1111_1111_1111_1111,
    0x2222_2222_2222_2222,
    0x3333_3333_3333_3333,
    0x4444_4444_4444_4444,
];

/// `sector_hi` of an unused entry.
pub const SECTOR_HI_UNUSED: u32 = 0xffff_ffff;
/// `sector_hi` of an entry being copied in (in memory only).
pub const SECTOR_HI_IN_PROGRESS: u32 = 0xffff_fffe;

/// Byte offset of the commit id in a journal sector.
const COMMIT_ID_AT: usize = 504;

/// The sequence after `seq`.
pub fn next_seq(seq: u8) -> u8 {
    (seq + 1) % N_COMMIT_IDS as u8
}

/// The sequence before `seq`.
pub fn prev_seq(seq: u8) -> u8 {
    (seq + N_COMMIT_IDS as u8 - 1) % N_COMMIT_IDS as u8
}

/// The commit id of sector `sector` of section `section` written with sequence `seq`
/// (`dm_integrity_commit_id`).
pub fn commit_id(section: u32, sector: u32, seq: u8) -> u64 {
    COMMIT_IDS[usize::from(seq) % N_COMMIT_IDS] ^ ((u64::from(section) << 32) ^ u64::from(sector))
}

/// The commit id a journal sector carries.
pub fn sector_commit_id(data: &[u8; 512]) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(&data[COMMIT_ID_AT..]);
    u64::from_le_bytes(id)
}

/// The sequence of a journal sector, `None` if its commit id is none of the four.
pub fn sector_seq(section: u32, sector: u32, data: &[u8; 512]) -> Option<u8> {
    let id = sector_commit_id(data);
    (0..N_COMMIT_IDS as u8).find(|&k| commit_id(section, sector, k) == id)
}

/// Sector `sector` of section `section` of an erased journal written with sequence `seq`, as
/// dm-integrity's `init_journal` writes it without journal encryption or MAC: zeroes, every
/// entry of an entry sector unused, and the commit id.
pub fn erased_sector(shape: &JournalShape, section: u32, sector: u32, seq: u8, out: &mut [u8; 512]) {
    out.fill(0);
    if sector < JOURNAL_BLOCK_SECTORS {
        for k in 0..shape.entries_per_sector {
            let at = (k * shape.entry_size) as usize;
            out[at + 4..at + 8].copy_from_slice(&SECTOR_HI_UNUSED.to_le_bytes());
        }
    }
    out[COMMIT_ID_AT..].copy_from_slice(&commit_id(section, sector, seq).to_le_bytes());
}

/// A journal dm-integrity cannot read: it fails the device (`dm_integrity_io_error`) and writes
/// nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corrupt {
    /// A sector's commit id is none of the four sequences (`"journal commit id"`).
    CommitId,
    /// Every sequence is in use (`"journal commit ids"`).
    CommitIds,
}

impl Corrupt {
    /// What dm-integrity names in its error.
    pub fn message(self) -> &'static str {
        match self {
            Self::CommitId => "journal commit id",
            Self::CommitIds => "journal commit ids",
        }
    }
}

/// What a resume does with the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The first section to replay (`write_start`).
    pub start: u32,
    /// Committed sections from `start`, round the journal (`write_sections`).
    pub sections: u32,
    /// Their entries are written in place (the journal is not empty).
    pub replay: bool,
    /// The journal is then erased, every section with this sequence (`erase_seq`).
    pub erase: Option<u8>,
    /// The sequence the next commit writes with (`ic->commit_seq`).
    pub commit_seq: u8,
    /// The section the next commit starts at.
    pub continue_section: u32,
}

impl Plan {
    /// The `k`-th section to replay (`k < sections`), round the journal of `n` sections.
    pub fn section(&self, k: u32, n: u32) -> u32 {
        let s = u64::from(self.start) + u64::from(k);
        (s % u64::from(n.max(1))) as u32
    }
}

/// Per-section byte of [`Scan`]: the sequence of every sector of the section, or this if they
/// differ (a torn section).
const MIXED: u8 = 0xff;

/// The first pass over the journal: feed every sector of every section in order
/// ([`Scan::sector`]), then ask for the [`Plan`]. `summary` is one byte per section, owned by
/// the caller.
pub struct Scan<'a> {
    shape: JournalShape,
    summary: &'a mut [u8],
    used: [bool; N_COMMIT_IDS],
    max_section: [u32; N_COMMIT_IDS],
    empty: bool,
    corrupt: bool,
}

impl<'a> Scan<'a> {
    /// A scan of `summary.len()` sections of `shape`.
    pub fn new(shape: JournalShape, summary: &'a mut [u8]) -> Self {
        Self {
            shape,
            summary,
            used: [false; N_COMMIT_IDS],
            max_section: [0; N_COMMIT_IDS],
            empty: true,
            corrupt: false,
        }
    }

    /// Sector `sector` of section `section`.
    pub fn sector(&mut self, section: u32, sector: u32, data: &[u8; 512]) {
        let Some(slot) = self.summary.get_mut(section as usize) else {
            self.corrupt = true;
            return;
        };
        let Some(k) = sector_seq(section, sector, data) else {
            self.corrupt = true;
            return;
        };
        self.used[usize::from(k)] = true;
        self.max_section[usize::from(k)] = section;
        if sector == 0 {
            *slot = k;
        } else if *slot != k {
            *slot = MIXED;
        }
        if sector < JOURNAL_BLOCK_SECTORS {
            for e in 0..self.shape.entries_per_sector {
                let at = (e * self.shape.entry_size) as usize;
                if data[at + 4..at + 8] != SECTOR_HI_UNUSED.to_le_bytes() {
                    self.empty = false;
                }
            }
        }
    }

    /// What the resume does, as `replay_journal` decides it; `journal_mode` for a table in
    /// mode `J`.
    pub fn plan(&self, journal_mode: bool) -> Result<Plan, Corrupt> {
        if self.corrupt {
            return Err(Corrupt::CommitId);
        }
        let n = self.summary.len() as u32;
        let used = &self.used;
        // The first sequence not in use after those in use.
        let unused: u8 = if !used[N_COMMIT_IDS - 1] {
            let mut u = N_COMMIT_IDS - 1;
            while u > 0 && !used[u - 1] {
                u -= 1;
            }
            u as u8
        } else {
            match (0..N_COMMIT_IDS).find(|&k| !used[k]) {
                Some(u) => u as u8,
                None => return Err(Corrupt::CommitIds),
            }
        };
        let last_used = prev_seq(unused);
        let mut want = prev_seq(last_used);
        let mut empty = self.empty;
        if !used[usize::from(want)] && used[usize::from(prev_seq(want))] {
            empty = true;
        }
        let mut start = self.max_section[usize::from(last_used)].saturating_add(1);
        if start >= n {
            want = next_seq(want);
            start = start.saturating_sub(n);
        }
        let mut i = start;
        let mut sections = 0;
        while sections < n {
            if self.summary.get(i as usize) != Some(&want) {
                break;
            }
            sections += 1;
            i += 1;
            if i >= n {
                want = next_seq(want);
                i = 0;
            }
        }
        if sections == n && (journal_mode || empty) {
            Ok(Plan {
                start,
                sections,
                replay: !empty,
                erase: None,
                commit_seq: want,
                continue_section: start,
            })
        } else {
            let erase = prev_seq(prev_seq(last_used));
            Ok(Plan {
                start,
                sections,
                replay: !empty,
                erase: Some(erase),
                commit_seq: next_seq(erase),
                continue_section: 0,
            })
        }
    }
}

/// The entry of an entry at index `n` of a section whose 8 entry sectors are `entries`
/// (`8 * 512` bytes): `entry_size` bytes, `None` past the section's entries.
pub fn entry<'e>(shape: &JournalShape, entries: &'e [u8], n: u32) -> Option<&'e [u8]> {
    let (sector, offset) = shape.entry_position(n)?;
    let at = sector as usize * 512 + offset as usize;
    entries.get(at..at + shape.entry_size as usize)
}

/// What the replay does with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// An unused entry: nothing.
    Unused,
    /// A sector past the device (or an entry in progress): the kernel drops it.
    OutOfRange,
    /// The block at logical `sector` gets the entry's data and tag.
    Write {
        /// The logical sector of the block.
        sector: u64,
    },
    /// The sector does not start a block: dm-integrity fails the device
    /// (`"invalid sector in journal"`).
    Misaligned,
}

/// The logical sector an entry records (`journal_entry_get_sector`).
pub fn entry_sector(entry: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&entry[..8]);
    u64::from_le_bytes(b)
}

/// Whether an entry is unused.
pub fn entry_is_unused(entry: &[u8]) -> bool {
    entry[4..8] == SECTOR_HI_UNUSED.to_le_bytes()
}

/// What the replay does with `entry` on a device of `provided` data sectors and blocks of
/// `2^log2_spb` sectors.
pub fn action(entry: &[u8], log2_spb: u32, provided: u64) -> Action {
    if entry_is_unused(entry) {
        return Action::Unused;
    }
    let sector = entry_sector(entry);
    if sector & ((1u64 << log2_spb) - 1) != 0 {
        return Action::Misaligned;
    }
    if sector >= provided {
        return Action::OutOfRange;
    }
    Action::Write { sector }
}

/// The tag of `entry` (`tag_size` bytes after the last bytes of every sector of the block).
pub fn entry_tag(entry: &[u8], log2_spb: u32, tag_size: usize) -> &[u8] {
    let at = 8 + (8usize << log2_spb);
    &entry[at..at + tag_size]
}

/// Puts back, in the journal's copy `data` of an entry's block, the last 8 bytes of each sector
/// (where the journal keeps its commit ids) from the entry (`restore_last_bytes`).
pub fn restore_last_bytes(entry: &[u8], log2_spb: u32, data: &mut [u8]) {
    for s in 0..(1usize << log2_spb) {
        let src = &entry[8 + 8 * s..16 + 8 * s];
        data[s * 512 + COMMIT_ID_AT..(s + 1) * 512].copy_from_slice(src);
    }
}

/// Writes entry `n` of a section whose 8 entry sectors are `entries` (`8 * 512` bytes), as the
/// kernel's writer fills it: the logical `sector`, the last 8 bytes of each sector of the block's
/// `data` (which the commit ids take in the journal's copy) and the `tag`. `None` past the
/// section's entries or with buffers too short.
pub fn write_entry(
    shape: &JournalShape,
    entries: &mut [u8],
    n: u32,
    log2_spb: u32,
    sector: u64,
    data: &[u8],
    tag: &[u8],
) -> Option<()> {
    let (s, offset) = shape.entry_position(n)?;
    let at = s as usize * 512 + offset as usize;
    let spb = 1usize << log2_spb;
    let tag_at = 8 + 8 * spb;
    let entry = entries.get_mut(at..at + shape.entry_size as usize)?;
    if data.len() < spb * 512 || entry.len() < tag_at + tag.len() {
        return None;
    }
    entry.fill(0);
    entry[..8].copy_from_slice(&sector.to_le_bytes());
    for k in 0..spb {
        entry[8 + 8 * k..16 + 8 * k].copy_from_slice(&data[k * 512 + COMMIT_ID_AT..(k + 1) * 512]);
    }
    entry[tag_at..tag_at + tag.len()].copy_from_slice(tag);
    Some(())
}

/// Stamps the commit id of sequence `seq` into the last 8 bytes of every sector of `sectors`
/// (whole 512-byte sectors), the first being sector `first` of section `section` (what a commit
/// does to every sector of the sections it writes).
pub fn stamp_commit_ids(sectors: &mut [u8], section: u32, first: u32, seq: u8) {
    for (k, s) in sectors.chunks_exact_mut(512).enumerate() {
        let id = commit_id(section, first + k as u32, seq);
        s[COMMIT_ID_AT..].copy_from_slice(&id.to_le_bytes());
    }
}

/// Where mode `J` writes next: the section and the sequence it commits it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The next section to write.
    pub section: u32,
    /// The sequence it is committed with.
    pub seq: u8,
}

impl Cursor {
    /// Where a resume leaves the writer.
    pub fn after(plan: &Plan) -> Self {
        Self { section: plan.continue_section, seq: plan.commit_seq }
    }

    /// Past one committed section of a journal of `n` sections: the sequence advances where the
    /// journal wraps.
    pub fn advance(&mut self, n: u32) {
        self.section += 1;
        if self.section >= n {
            self.section = 0;
            self.seq = next_seq(self.seq);
        }
    }

    /// The sections a clean suspend erases and their sequences: `[section, n)` with `seq`, then
    /// `[0, section)` with the next (`dm_integrity_postsuspend`): the journal is then whole and
    /// empty, and the next writer goes on here.
    pub fn erase_ranges(&self, n: u32) -> [(u32, u32, u8); 2] {
        [(self.section, n - self.section.min(n), self.seq), (0, self.section.min(n), next_seq(self.seq))]
    }
}
