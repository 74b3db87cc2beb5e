// SPDX-License-Identifier: GPL-2.0

//! The journal's replay (`integrity_journal`) against journals built here byte by byte from
//! dm-integrity's format (dm-integrity.c: `struct journal_entry`, `struct journal_sector`,
//! `dm_integrity_commit_id`, `init_journal`, `integrity_commit`): which sections a resume
//! replays, in which order, with which data and tags, and what it leaves behind; torn sections,
//! wrap-around, the last entry of a section, blocks of several sectors, entries out of range or
//! misaligned, and corrupt commit ids.

use std::collections::BTreeMap;

use dm_rust_pure::integrity_geometry::JournalShape;
use dm_rust_pure::integrity_journal::{self as journal, Action, Corrupt, Plan, Scan};

const IDS: [u64; 4] = [
    0x1111_1111_1111_1111,
    0x2222_2222_2222_2222,
    0x3333_3333_3333_3333,
    0x4444_4444_4444_4444,
];

/// A journal in memory, written the way dm-integrity writes one.
struct Journal {
    log2_spb: u32,
    tag_size: usize,
    entry_size: usize,
    per_sector: usize,
    sections: u32,
    section_sectors: usize,
    sectors: Vec<[u8; 512]>,
}

fn id(section: u32, sector: usize, seq: u8) -> [u8; 8] {
    (IDS[seq as usize] ^ ((u64::from(section) << 32) ^ sector as u64)).to_le_bytes()
}

/// One entry to commit: the logical sector, the block's data and its tag.
type Entry = (u64, Vec<u8>, Vec<u8>);

impl Journal {
    fn new(tag_size: usize, log2_spb: u32, sections: u32) -> Self {
        // sector (8) + last bytes (8 per sector) + tag, rounded up to 8 bytes.
        let entry_size = (8 + (8 << log2_spb) + tag_size).div_ceil(8) * 8;
        let per_sector = 504 / entry_size;
        let section_sectors = 8 + ((per_sector * 8) << log2_spb);
        let mut j = Self {
            log2_spb,
            tag_size,
            entry_size,
            per_sector,
            sections,
            section_sectors,
            sectors: vec![[0u8; 512]; sections as usize * section_sectors],
        };
        for s in 0..sections {
            j.erase(s, 0);
        }
        j
    }

    fn shape(&self) -> JournalShape {
        JournalShape::new(self.tag_size as u32, self.log2_spb, false).unwrap()
    }

    fn entries(&self) -> usize {
        self.per_sector * 8
    }

    fn sector(&mut self, section: u32, j: usize) -> &mut [u8; 512] {
        &mut self.sectors[section as usize * self.section_sectors + j]
    }

    /// `init_journal` of one section: zeroes, entries unused, commit ids of `seq`.
    fn erase(&mut self, section: u32, seq: u8) {
        let (per, es) = (self.per_sector, self.entry_size);
        for j in 0..self.section_sectors {
            let s = self.sector(section, j);
            s.fill(0);
            if j < 8 {
                for k in 0..per {
                    s[k * es + 4..k * es + 8].copy_from_slice(&[0xff; 4]);
                }
            }
            s[504..].copy_from_slice(&id(section, j, seq));
        }
    }

    /// Writes `entries` into section `section` as the writer does (entry `n` in sector `n % 8`
    /// at `n / 8 * entry_size`, its data from sector `8 + n * spb` with each sector's last
    /// 8 bytes kept in the entry) and commits it with `seq`; the other entries stay unused.
    fn commit(&mut self, section: u32, seq: u8, entries: &[Entry]) {
        self.erase(section, seq);
        let spb = 1usize << self.log2_spb;
        for (n, (sector, data, tag)) in entries.iter().enumerate() {
            assert!(n < self.entries());
            let (es, ts) = (self.entry_size, self.tag_size);
            let es_at = n / 8 * es;
            let mut entry = vec![0u8; es];
            entry[..8].copy_from_slice(&sector.to_le_bytes());
            for s in 0..spb {
                entry[8 + 8 * s..16 + 8 * s].copy_from_slice(&data[s * 512 + 504..(s + 1) * 512]);
            }
            entry[8 + 8 * spb..8 + 8 * spb + ts].copy_from_slice(tag);
            self.sector(section, n % 8)[es_at..es_at + es].copy_from_slice(&entry);
            for s in 0..spb {
                let js = 8 + n * spb + s;
                let out = self.sector(section, js);
                out[..504].copy_from_slice(&data[s * 512..s * 512 + 504]);
            }
        }
    }

    /// Sector `j` of `section` torn: written with `seq` (its content unchanged).
    fn set_seq(&mut self, section: u32, j: usize, seq: u8) {
        let v = id(section, j, seq);
        self.sector(section, j)[504..].copy_from_slice(&v);
    }

    fn scan(&self, journal_mode: bool) -> Result<Plan, Corrupt> {
        let mut summary = vec![0u8; self.sections as usize];
        let mut sc = Scan::new(self.shape(), &mut summary);
        for s in 0..self.sections {
            for j in 0..self.section_sectors {
                sc.sector(s, j as u32, &self.sectors[s as usize * self.section_sectors + j]);
            }
        }
        sc.plan(journal_mode)
    }

    /// The blocks a resume writes in place, in order: (sector, data, tag). `Err` on a
    /// misaligned entry.
    fn replay(&self, plan: &Plan, provided: u64) -> Result<Vec<Entry>, u64> {
        let mut out = Vec::new();
        if !plan.replay {
            return Ok(out);
        }
        let shape = self.shape();
        let spb = 1usize << self.log2_spb;
        for k in 0..plan.sections {
            let section = plan.section(k, self.sections);
            let base = section as usize * self.section_sectors;
            let entries: Vec<u8> = self.sectors[base..base + 8].concat();
            for n in 0..shape.section_entries {
                let e = journal::entry(&shape, &entries, n).unwrap();
                match journal::action(e, self.log2_spb, provided) {
                    Action::Unused | Action::OutOfRange => {}
                    Action::Misaligned => return Err(journal::entry_sector(e)),
                    Action::Write { sector } => {
                        let ds = shape.entry_data_sector(n, self.log2_spb).unwrap() as usize;
                        let mut data: Vec<u8> = self.sectors[base + ds..base + ds + spb].concat();
                        journal::restore_last_bytes(e, self.log2_spb, &mut data);
                        let tag = journal::entry_tag(e, self.log2_spb, self.tag_size).to_vec();
                        out.push((sector, data, tag));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A block of `spb` sectors whose every byte says which block and version it is (the last
/// bytes of each sector differ from the commit ids).
fn block(log2_spb: u32, sector: u64, version: u8) -> Vec<u8> {
    let n = 512usize << log2_spb;
    (0..n)
        .map(|i| (sector as u8).wrapping_mul(31) ^ version.wrapping_mul(7) ^ (i as u8) ^ (i >> 9) as u8)
        .collect()
}

fn tag(ts: usize, sector: u64, version: u8) -> Vec<u8> {
    (0..ts).map(|i| sector as u8 ^ version ^ (i as u8 * 3)).collect()
}

fn entry(j: &Journal, sector: u64, version: u8) -> Entry {
    (sector, block(j.log2_spb, sector, version), tag(j.tag_size, sector, version))
}

/// The device after the replay: the newest data and tag of each block.
fn apply(blocks: &[Entry]) -> BTreeMap<u64, (Vec<u8>, Vec<u8>)> {
    let mut m = BTreeMap::new();
    for (s, d, t) in blocks {
        m.insert(*s, (d.clone(), t.clone()));
    }
    m
}

#[test]
fn shape_matches_the_format() {
    for (ts, l) in [(4usize, 0u32), (32, 0), (4, 3), (8, 2), (255, 3)] {
        let j = Journal::new(ts, l, 1);
        let s = j.shape();
        assert_eq!(s.entry_size as usize, j.entry_size);
        assert_eq!(s.entries_per_sector as usize, j.per_sector);
        assert_eq!(s.section_sectors as usize, j.section_sectors);
    }
}

#[test]
fn commit_ids() {
    assert_eq!(journal::commit_id(2, 3, 0), 0x1111_1113_1111_1112);
    assert_eq!(journal::commit_id(0, 8, 3), 0x4444_4444_4444_444c);
    assert_eq!((journal::next_seq(3), journal::prev_seq(0)), (0, 3));
    let j = Journal::new(4, 0, 3);
    assert_eq!(journal::sector_seq(1, 9, &j.sectors[j.section_sectors + 9]), Some(0));
    assert_eq!(journal::sector_seq(2, 9, &j.sectors[j.section_sectors + 9]), None);
    // The erased sectors the module writes are those of `init_journal`.
    let mut j = Journal::new(4, 0, 3);
    j.erase(1, 2);
    let shape = j.shape();
    let mut s = [0u8; 512];
    for k in 0..j.section_sectors {
        journal::erased_sector(&shape, 1, k as u32, 2, &mut s);
        assert_eq!(s, j.sectors[j.section_sectors + k], "sector {k}");
    }
}

#[test]
fn freshly_formatted_journal_is_left_alone() {
    let j = Journal::new(4, 0, 5);
    for mode in [false, true] {
        let p = j.scan(mode).unwrap();
        assert_eq!(
            p,
            Plan { start: 0, sections: 5, replay: false, erase: None, commit_seq: 1, continue_section: 0 }
        );
    }
}

#[test]
fn committed_sections_replay_oldest_first() {
    // Erased with sequence 0, then the writer (sequence 1) committed sections 0 and 1 and
    // crashed before writing them back.
    let mut j = Journal::new(4, 0, 5);
    let e0 = vec![entry(&j, 8, 1), entry(&j, 9, 1), entry(&j, 100, 1)];
    let e1 = vec![entry(&j, 9, 2), entry(&j, 0, 1)];
    j.commit(0, 1, &e0);
    j.commit(1, 1, &e1);
    let p = j.scan(false).unwrap();
    // From section 2 (the oldest, sequence 0) round to section 1; then erased with
    // sequence 3, and the next commit writes sequence 0 from section 0.
    assert_eq!(
        p,
        Plan { start: 2, sections: 5, replay: true, erase: Some(3), commit_seq: 0, continue_section: 0 }
    );
    // Mode J goes on after the last committed section with the sequence it wrote.
    let pj = j.scan(true).unwrap();
    assert_eq!(
        pj,
        Plan { start: 2, sections: 5, replay: true, erase: None, commit_seq: 1, continue_section: 2 }
    );
    let blocks = j.replay(&p, 1 << 20).unwrap();
    let want: Vec<Entry> = e0.iter().chain(e1.iter()).cloned().collect();
    assert_eq!(blocks, want);
    let dev = apply(&blocks);
    assert_eq!(dev[&9], (block(0, 9, 2), tag(4, 9, 2)));
    assert_eq!(dev[&8].0, block(0, 8, 1));
}

#[test]
fn torn_section_is_not_replayed() {
    let mut j = Journal::new(4, 0, 5);
    let e0 = vec![entry(&j, 16, 1)];
    let e1 = vec![entry(&j, 16, 2), entry(&j, 24, 2)];
    j.commit(0, 1, &e0);
    j.commit(1, 1, &e1);
    // Section 1's write was cut: its sectors 5 and up kept sequence 0.
    for k in 5..j.section_sectors {
        j.set_seq(1, k, 0);
    }
    for mode in [false, true] {
        let p = j.scan(mode).unwrap();
        assert_eq!(
            p,
            Plan { start: 2, sections: 4, replay: true, erase: Some(3), commit_seq: 0, continue_section: 0 }
        );
        assert_eq!(j.replay(&p, 1 << 20).unwrap(), e0);
    }
    // Torn in its data sectors only: the same.
    let mut j2 = Journal::new(4, 0, 5);
    j2.commit(0, 1, &e0);
    j2.commit(1, 1, &e1);
    j2.set_seq(1, 20, 0);
    let p = j2.scan(true).unwrap();
    assert_eq!((p.sections, p.erase), (4, Some(3)));
    assert_eq!(j2.replay(&p, 1 << 20).unwrap(), e0);
}

#[test]
fn torn_first_section_replays_nothing_before_it() {
    // The oldest section (where the replay starts) torn: nothing replays, the journal is
    // erased.
    let mut j = Journal::new(4, 0, 4);
    j.commit(0, 1, &[entry(&j, 8, 1)]);
    j.set_seq(1, 3, 1);
    let p = j.scan(false).unwrap();
    // Sequence 1's last sector is in section 1: the replay starts at section 2 with sequence
    // 0, runs over 2 and 3, then wants sequence 1 at section 0 (there) and stops at section 1.
    assert_eq!((p.start, p.sections, p.replay, p.erase), (2, 3, true, Some(3)));
    assert_eq!(j.replay(&p, 1 << 20).unwrap(), vec![entry(&j, 8, 1)]);
}

#[test]
fn wrap_around_newer_entries_win() {
    let mut j = Journal::new(4, 0, 6);
    // The writer went round once with sequence 1 ...
    for s in 0..6 {
        j.commit(s, 1, &[entry(&j, u64::from(s) * 8, 1), entry(&j, 400, s as u8)]);
    }
    // ... then with sequence 2 over sections 0 to 2.
    for s in 0..3 {
        j.commit(s, 2, &[entry(&j, u64::from(s) * 8, 9), entry(&j, 400, 10 + s as u8)]);
    }
    let p = j.scan(false).unwrap();
    assert_eq!(
        p,
        Plan { start: 3, sections: 6, replay: true, erase: Some(0), commit_seq: 1, continue_section: 0 }
    );
    let pj = j.scan(true).unwrap();
    assert_eq!((pj.erase, pj.commit_seq, pj.continue_section), (None, 2, 3));
    let order: Vec<u32> = (0..p.sections).map(|k| p.section(k, 6)).collect();
    assert_eq!(order, vec![3, 4, 5, 0, 1, 2]);
    let dev = apply(&j.replay(&p, 1 << 20).unwrap());
    assert_eq!(dev[&400].0, block(0, 400, 12));
    assert_eq!(dev[&0].0, block(0, 0, 9));
    assert_eq!(dev[&40].0, block(0, 40, 1));
}

#[test]
fn wrap_around_of_the_sequences() {
    // Sequences 3 then 0: sequence 0 is the newer one.
    let mut j = Journal::new(4, 0, 4);
    for s in 0..4 {
        j.commit(s, 3, &[entry(&j, 8, s as u8)]);
    }
    j.commit(0, 0, &[entry(&j, 8, 20)]);
    let p = j.scan(false).unwrap();
    assert_eq!(
        p,
        Plan { start: 1, sections: 4, replay: true, erase: Some(2), commit_seq: 3, continue_section: 0 }
    );
    assert_eq!(j.scan(true).unwrap().commit_seq, 0);
    let blocks = j.replay(&p, 1 << 20).unwrap();
    assert_eq!(blocks.last().unwrap().1, block(0, 8, 20));
    assert_eq!(blocks.len(), 4);
    // The last section of the newest sequence is the last of the journal: the replay starts
    // at section 0, the oldest sequence wrapping to the next.
    let mut j = Journal::new(4, 0, 3);
    for s in 0..3 {
        j.commit(s, 1, &[entry(&j, 8, s as u8)]);
    }
    let p = j.scan(false).unwrap();
    assert_eq!((p.start, p.sections, p.replay), (0, 3, true));
    assert_eq!(apply(&j.replay(&p, 1 << 20).unwrap())[&8].0, block(0, 8, 2));
}

#[test]
fn last_entry_of_a_section_and_multi_sector_blocks() {
    for (ts, l) in [(4usize, 0u32), (32, 0), (4, 3), (64, 2)] {
        let mut j = Journal::new(ts, l, 2);
        let n = j.entries();
        let spb = 1u64 << l;
        let entries: Vec<Entry> = (0..n as u64).map(|i| entry(&j, (1000 + i) * spb, 5)).collect();
        j.commit(0, 1, &entries);
        let p = j.scan(false).unwrap();
        let blocks = j.replay(&p, 1 << 30).unwrap();
        assert_eq!(blocks.len(), n, "tag {ts} log2 {l}");
        assert_eq!(blocks, entries, "tag {ts} log2 {l}");
        // The last entry's data ends the section.
        let last = &blocks[n - 1];
        assert_eq!(last.1, block(l, (1000 + n as u64 - 1) * spb, 5));
    }
}

#[test]
fn entries_out_of_range_in_progress_and_misaligned() {
    let mut j = Journal::new(4, 3, 2);
    let provided = 64;
    j.commit(0, 1, &[entry(&j, 56, 1), entry(&j, 64, 1), entry(&j, 8, 1)]);
    // An entry marked in progress (sector_hi 0xfffffffe): skipped as out of range.
    j.sector(0, 3)[..8].copy_from_slice(&[0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
    let p = j.scan(false).unwrap();
    let blocks = j.replay(&p, provided).unwrap();
    assert_eq!(blocks.iter().map(|b| b.0).collect::<Vec<_>>(), vec![56, 8]);
    // A sector inside a block: dm-integrity fails the device.
    j.commit(1, 1, &[entry(&j, 12, 1)]);
    let p = j.scan(false).unwrap();
    assert_eq!(j.replay(&p, provided), Err(12));
}

#[test]
fn corrupt_commit_ids() {
    let mut j = Journal::new(4, 0, 4);
    j.sector(2, 7)[504] ^= 0x5a;
    assert_eq!(j.scan(false), Err(Corrupt::CommitId));
    let mut j = Journal::new(4, 0, 4);
    for s in 0..4 {
        j.commit(s, s as u8, &[]);
    }
    assert_eq!(j.scan(true), Err(Corrupt::CommitIds));
    assert_eq!(Corrupt::CommitIds.message(), "journal commit ids");
}

#[test]
fn empty_despite_entries_when_the_wanted_sequence_is_missing() {
    // Sequences 0 and 2 in use, not 1: the kernel takes the journal as empty (erased).
    let mut j = Journal::new(4, 0, 4);
    j.commit(0, 2, &[entry(&j, 8, 1)]);
    let p = j.scan(false).unwrap();
    assert!(!p.replay);
    assert_eq!(p.erase, Some(0));
    assert!(j.replay(&p, 1 << 20).unwrap().is_empty());
}

/// A section as the module's mode `J` writes it (`write_entry`, `stamp_commit_ids`): entry
/// sectors erased, the entries, the data of every entry (unused slots zero), commit ids.
fn module_section(j: &Journal, section: u32, seq: u8, entries: &[Entry]) -> Vec<[u8; 512]> {
    let shape = j.shape();
    let spb = 1usize << j.log2_spb;
    let mut ent = vec![0u8; 8 * 512];
    let mut s = [0u8; 512];
    for k in 0..8 {
        journal::erased_sector(&shape, section, k, seq, &mut s);
        ent[k as usize * 512..(k as usize + 1) * 512].copy_from_slice(&s);
    }
    let mut data = vec![0u8; j.entries() * spb * 512];
    for (n, (sector, d, t)) in entries.iter().enumerate() {
        data[n * spb * 512..(n + 1) * spb * 512].copy_from_slice(d);
        journal::write_entry(&shape, &mut ent, n as u32, j.log2_spb, *sector, d, t).unwrap();
    }
    journal::stamp_commit_ids(&mut data, section, 8, seq);
    ent.chunks(512)
        .chain(data.chunks(512))
        .map(|c| c.try_into().unwrap())
        .collect()
}

#[test]
fn module_writer_matches_the_format() {
    for (ts, l) in [(4usize, 0u32), (32, 0), (4, 3), (64, 2)] {
        let mut j = Journal::new(ts, l, 3);
        let spb = 1u64 << l;
        let n = j.entries();
        // A full section and one with a single entry (the last one of a section too).
        for (section, count) in [(0u32, n), (1, 1)] {
            let entries: Vec<Entry> = (0..count as u64).map(|i| entry(&j, (7 + i) * spb, 3)).collect();
            let ours = module_section(&j, section, 2, &entries);
            j.commit(section, 2, &entries);
            // The kernel's writer leaves old data in the unused slots' data sectors: compare
            // the entry sectors and the used data sectors.
            let base = section as usize * j.section_sectors;
            for k in 0..8 + count * spb as usize {
                assert_eq!(ours[k], j.sectors[base + k], "tag {ts} log2 {l} section {section} sector {k}");
            }
            for k in 8 + count * spb as usize..j.section_sectors {
                assert_eq!(ours[k][504..], id(section, k, 2), "commit id of an unused data sector");
            }
        }
    }
}

#[test]
fn writer_cursor_crash_and_clean_suspend() {
    let mut j = Journal::new(4, 0, 3);
    // A formatted journal: the writer starts at section 0 with sequence 1.
    let p = j.scan(true).unwrap();
    let mut c = journal::Cursor::after(&p);
    assert_eq!(c, journal::Cursor { section: 0, seq: 1 });
    // Five commits: sections 0, 1, 2 (sequence 1), then 0, 1 (sequence 2).
    let mut latest = BTreeMap::new();
    for v in 0..5u8 {
        let e = vec![entry(&j, 8, v), entry(&j, 16 + u64::from(v) * 8, v)];
        let sec = module_section(&j, c.section, c.seq, &e);
        let base = c.section as usize * j.section_sectors;
        j.sectors[base..base + j.section_sectors].copy_from_slice(&sec);
        for (s, d, t) in &e {
            latest.insert(*s, (d.clone(), t.clone()));
        }
        c.advance(3);
    }
    assert_eq!(c, journal::Cursor { section: 2, seq: 2 });
    // The crash: the replay (kernel's order) leaves the newest data; mode J goes on where the
    // writer was.
    let p = j.scan(true).unwrap();
    assert_eq!((p.start, p.sections, p.replay, p.erase), (2, 3, true, None));
    assert_eq!(journal::Cursor::after(&p), c);
    let dev = apply(&j.replay(&p, 1 << 20).unwrap());
    // Block 16 + 8 * 0 (version 0, in section 0 overwritten) is gone from the journal: it was
    // written back before its section was reused.
    for (s, v) in &dev {
        assert_eq!(Some(v), latest.get(s), "sector {s}");
    }
    assert_eq!(dev[&8].0, block(0, 8, 4));
    // A clean suspend erases [2, 3) with sequence 2 and [0, 2) with 3: whole and empty. A
    // resume that reads it goes on at the same section with sequence 3 (the kernel's choice);
    // one that does not (`journal_uptodate`) goes on with sequence 2: both are consistent.
    for (first, count, seq) in c.erase_ranges(3) {
        for s in first..first + count {
            j.erase(s, seq);
        }
    }
    let p = j.scan(true).unwrap();
    assert_eq!((p.replay, p.erase, p.sections), (false, None, 3));
    assert_eq!(journal::Cursor::after(&p), journal::Cursor { section: 2, seq: 3 });
    let mut k = Journal { sectors: j.sectors.clone(), ..Journal::new(4, 0, 3) };
    let e = vec![entry(&k, 64, 7)];
    let sec = module_section(&k, c.section, c.seq, &e);
    let base = c.section as usize * k.section_sectors;
    k.sectors[base..base + k.section_sectors].copy_from_slice(&sec);
    let p = k.scan(false).unwrap();
    assert_eq!((p.sections, p.replay), (3, true));
    assert_eq!(k.replay(&p, 1 << 20).unwrap(), e);
    // Mode D on it leaves it alone too.
    assert_eq!(j.scan(false).unwrap().erase, None);
}
