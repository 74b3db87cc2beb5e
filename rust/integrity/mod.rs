// SPDX-License-Identifier: GPL-2.0

//! `integrity-rs` (`integrity` with `upstream_names=1`): a device whose every data block carries
//! a tag (a checksum of the block and its sector), stored beside the data in dm-integrity's
//! on-disk format, so that a device formatted by integritysetup opens here and in the kernel's
//! dm-integrity alike.
//!
//! This first slice implements mode `D` (direct: data and tags written in place, no journal)
//! with an internal hash (`crc32c`, `sha256`, any hash of the crypto API, keyed ones such as
//! `hmac(sha256)` with a hex key), `recalculate`, `allow_discards`, mode `R` (recovery:
//! reads unchecked, writes refused, nothing written) and mode `B` (bitmap). The pure parts do
//! the arithmetic: the table line ([`table`]), the superblock ([`superblock`]), the layout
//! ([`geometry`]), the recalculation bookkeeping ([`recalc`]) and the dirty bitmap
//! ([`bitmap`]).
//! This module does the I/O:
//!
//! - every data bio goes to process context (`map_deferred`), where it takes a lock on its data
//!   range (held until the bio is finished in `io_done`), so that a read never sees data and tags
//!   of two different writes, two writes of one block never leave the tag of the other's data,
//!   and the recalculation worker never writes a tag over a newer one;
//! - a write's tags are computed from its data before it is submitted and written into the
//!   metadata cache (dm-bufio, read/modify/write under one lock); the cache is written back on
//!   flushes, FUA writes, checkpoints and suspend, and by dm-bufio in the background;
//! - a read is checked in `io_done` once its data has arrived: a mismatch fails the bio with
//!   `BLK_STS_PROTECTION` (`EILSEQ`, as dm-integrity), is logged (rate-limited), counted in the
//!   status line and sent as an audit record;
//! - with `recalculate`, a worker on the target's workqueue computes the tags from the
//!   superblock's `recalc_sector` upward and writes the position back every checkpoint; reads
//!   that reach above the position are not checked. `presuspend` stops it, `resume` restarts it;
//! - with `allow_discards`, a discard sets the tags of its blocks to dm-integrity's filler
//!   (`0xf6` bytes) before it goes down; a block whose tag is all filler reads unchecked;
//! - in mode `B`, a write or discard whose bitmap bits are not known to be on disk sets them and
//!   writes their bitmap blocks (FUA) first, under its range lock; a flush worker clears them
//!   `bitmap_flush_interval` later, once the tags are on disk and with the whole device locked;
//!   resume puts the bitmap in force (`SB_FLAG_DIRTY_BITMAP`) or, after a crash, has the
//!   recalculation worker redo the tags of the dirty regions (reads there are not checked until
//!   then); `postsuspend` writes an empty journal over the bitmap and clears the flag, as
//!   dm-integrity does. Mode `D` opening a dirty bitmap recalculates as dm-integrity's does;
//! - in modes `J`, `D` and `B`, the first resume replays the journal a mode `J` device left
//!   after a crash ([`journal`]: its committed sections' blocks and tags written in place), then
//!   erases it (but in mode `J` if it was whole), as dm-integrity's `replay_journal`;
//! - in mode `J`, a write is committed to the journal's next section (FUA), then written in place
//!   (data with FUA, tags into the cache) before it completes; a section is written over only
//!   after a flush of the cache and device; `postsuspend` erases the journal as dm-integrity's.
//!
//! A blank device (superblock area all zero) is formatted by the constructor as dm-integrity's
//! does ([`format`]: the superblock and the whole journal computed by the pure code, written
//! once every check passed), so that `integritysetup format` works with ours.
//!
//! Without `internal_hash` the tags belong to the layer above (dm-crypt's authenticated
//! encryption, LUKS2 `--integrity`): the mapped device gets an integrity profile of `tag_size`
//! bytes per block, a write's tags come from its integrity payload and are stored as ours
//! would be (zeroes in mode `J` for a write without one, nothing in mode `D`), a read's tags
//! are copied into its payload before it goes down, and nothing is checked here, as
//! dm-integrity does.
//!
//! What is not implemented is refused with a message naming it, before anything is written:
//! mode `R` without a superblock, `meta_device`, `journal_crypt`, `journal_mac`,
//! `allow_discards_keyed`.

// Targets are safe Rust: all unsafe code lives in the abstraction (`rust/dm/`).
#![deny(unsafe_code)]

// The pure modules serve the host tests and modes not implemented yet, too.
#[allow(dead_code)]
pub mod bitmap;
#[allow(dead_code)]
pub mod format;
#[allow(dead_code)]
pub mod geometry;
#[allow(dead_code)]
pub mod journal;
#[allow(dead_code)]
pub mod recalc;
#[allow(dead_code)]
pub mod superblock;
#[allow(dead_code)]
pub mod table;

use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::sync::{new_condvar, new_mutex, CondVar, Mutex};
use kernel::time::{delay::fsleep, Delta, Instant, Monotonic};

use crate::bindings;
use crate::dm::bio::Op;
use crate::dm::saved_args::SavedArgs;
use crate::dm::bufio::BufioClient;
use crate::dm::context::MaySleep;
use crate::dm::device::QueueLimits;
use crate::dm::hash::Shash;
use crate::dm::skcipher::SecretBuf;
use crate::dm::io::{BlockError, Deferred, DoneIo, IoBlock};
use crate::dm::work::{flags, Defer, MaxActive, WorkqueueConfig};
use crate::dm::{
    system, Args, Bio, CtrError, Device, DeviceVisitor, MapResult, StatusType, StatusWriter,
    Target, TargetCtx, Ti,
};
use bitmap::Bits;
use geometry::Geometry;
use superblock::{
    Probe, Superblock, TableView, MAX_DIGEST_SIZE, SB_FLAG_DIRTY_BITMAP, SB_FLAG_FIXED_HMAC,
    SB_SECTORS,
};
use table::{IntegrityTable, Mode, State, MAX_TAG_SIZE};

/// Logs an error the way dm-integrity's messages read (`device-mapper: integrity: ...`).
macro_rules! integrity_err {
    ($($arg:tt)*) => {
        pr_err!("device-mapper: integrity: {}\n", format_args!($($arg)*))
    };
}

/// Sectors the recalculation worker reads at once (128 KiB of kmalloc memory).
const RECALC_CHUNK_SECTORS: u32 = 256;

/// Data ranges locked at once (bios in flight plus the worker); more wait.
const MAX_RANGES: usize = 256;

/// The tag bytes of a discarded block (dm-integrity's `DISCARD_FILLER`): with `allow_discards`,
/// a block whose tag is all filler reads whatever the device returns, unchecked.
const DISCARD_FILLER: u8 = 0xf6;

/// Bytes of filler tags written at once for a discard.
const FILLER_CHUNK: usize = 4096;

/// Bytes of the superblock area (`SB_SECTORS` sectors).
const SB_BYTES: usize = SB_SECTORS as usize * 512;

/// Ranges of data-device sectors in use by a bio or the worker.
struct RangeSet {
    ranges: [(u64, u64); MAX_RANGES],
    n: usize,
    /// The bitmap flush waits for the whole device: new ranges wait behind it.
    barrier: bool,
}

impl RangeSet {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.ranges[..self.n]
            .iter()
            .any(|&(s, e)| s < end && start < e)
    }
}

/// The superblock as kept in memory, with the whole area it was read from (written back as it
/// was read but for the superblock's 64 bytes).
struct SbState {
    sb: Superblock,
    area: KVec<u8>,
    /// Changed since it was last written.
    dirty: bool,
}

/// Work on the target's workqueue.
pub(crate) enum Work {
    /// The recalculation worker.
    Recalc,
    /// B mode: the bitmap flush (tags to disk, then the bits of finished writes cleared), after
    /// `bitmap_flush_interval` or at once.
    BitmapFlush,
}

/// B mode's bitmaps (see [`bitmap`]) and the flush worker's state.
struct BitmapState {
    /// What is, or is about to be, on disk (dirty regions).
    disk: KVec<u8>,
    /// Bits known to be on disk: a write inside them goes ahead at once.
    may_write: KVec<u8>,
    /// Regions whose tags are still to be recalculated (reads there are not checked).
    recalc: KVec<u8>,
    /// One bitmap block, for writing it alone.
    block: KVec<u8>,
    /// A flush worker is queued or running.
    flush_running: bool,
    /// Bits were set since the flush worker last started flushing.
    flush_pending: bool,
    /// Flush without waiting for the interval (the recalculation ended).
    flush_now: bool,
}

/// The recalculation's controls (`dmsetup message`) and whether a worker is queued or running.
struct RecalcCtl {
    control: recalc::Control,
    running: bool,
}

/// Mode `J`'s writer: where it commits next, and its buffers for one section.
struct JournalWriter {
    cursor: journal::Cursor,
    /// The section's 8 entry sectors.
    entries: KVec<u8>,
    /// The data of the section's entries (their blocks in order, every slot).
    data: KVec<u8>,
    /// The tags of the entries.
    tags: KVec<u8>,
    /// Sections committed since the tag cache and the device were last flushed: a section
    /// committed `journal_sections` commits ago may only be written over after one.
    unflushed: u32,
    /// A section was committed since the last resume (dm-integrity's `wrote_to_journal`).
    wrote: bool,
}

/// Longest sleep of a rate-limited worker before it looks at its stop flag again.
const MAX_RATE_SLEEP_NS: u64 = 100_000_000;

/// An integrity target.
#[pin_data]
pub(crate) struct Integrity {
    /// The data device (which also holds the superblock and the tags).
    dev: Device,
    /// The internal hash; `None` when the tags are the layer above's (no `internal_hash`).
    tfm: Option<Shash>,
    geo: Geometry,
    tag_size: usize,
    /// Sectors per block.
    spb: u32,
    salt: Option<[u8; superblock::SALT_SIZE]>,
    /// `allow_discards`: discards pass, and a block whose tag is all [`DISCARD_FILLER`] reads
    /// without a check.
    discards: bool,
    /// Mode `R` (recovery): reads are not checked, writes and discards fail, nothing is written
    /// to the device (no superblock, no recalculation).
    recovery: bool,
    /// Mode `B`: a write's bitmap bits are on disk before it goes down.
    bitmap_mode: bool,
    /// Mode `J`: a write is committed to the journal, then written in place, before it completes.
    journal_mode: bool,
    #[pin]
    jw: Mutex<JournalWriter>,
    /// The bitmap's geometry (mode `D` reads a dirty bitmap a mode `B` table left).
    bits: Bits,
    /// `bitmap_flush_interval` in milliseconds, rounded up to a clock tick as the kernel keeps
    /// it.
    flush_interval_ms: u64,
    /// The data sectors the superblock recorded before the last resume (it grows with the
    /// device: the new sectors are dirty).
    old_provided: AtomicU64,
    #[pin]
    bm: Mutex<BitmapState>,
    /// The superblock the constructor read: a resume finding another layout on disk fails the
    /// device, as dm-integrity's.
    sb_at_load: Superblock,
    /// The journal on disk is the one this target left (dm-integrity's `journal_uptodate`): set
    /// by `postsuspend`, so that only the first resume replays it.
    journal_uptodate: AtomicBool,
    /// Every bio fails (dm-integrity's `ic->failed`): the superblock changed under a suspended
    /// device, or could not be read again.
    failed: AtomicBool,
    /// The tags, in buffers of `2^log2_buffer_sectors` sectors from `start + initial_sectors`.
    #[pin]
    meta: Mutex<BufioClient>,
    #[pin]
    sb: Mutex<SbState>,
    #[pin]
    ranges: Mutex<RangeSet>,
    #[pin]
    range_freed: CondVar,
    /// Tag mismatches seen.
    mismatches: AtomicU64,
    /// The recalculation worker must stop (set by `presuspend`).
    stop: AtomicBool,
    /// `reset_recalculate`: every resume recalculates from sector 0, as dm-integrity's.
    reset_recalculate: bool,
    #[pin]
    recalc_ctl: Mutex<RecalcCtl>,
    /// The origin of the time the rate limit counts in.
    epoch: Instant<Monotonic>,
    line: SavedArgs,
    /// Length of the target in sectors.
    len: u64,
}

fn nomem<E>(_: E) -> CtrError {
    CtrError::new(ENOMEM, c"Cannot allocate integrity structure")
}

/// What this slice does not implement, named in the error.
fn refuse_unimplemented(t: &IntegrityTable<'_>) -> Result<(), CtrError> {
    let e = |msg| Err(CtrError::new(EOPNOTSUPP, msg));
    if t.meta_device().is_some() {
        return e(c"meta_device is not implemented in integrity-rs");
    }
    if t.journal_crypt().is_some() {
        return e(c"journal_crypt is not implemented in integrity-rs");
    }
    if t.journal_mac().is_some() {
        return e(c"journal_mac is not implemented in integrity-rs");
    }
    Ok(())
}

/// Bytes of the entry sectors at the start of each journal section.
fn journal_entry_bytes() -> usize {
    geometry::JOURNAL_BLOCK_SECTORS as usize * 512
}

/// Mode `R` on a device without a superblock (dm-integrity makes one in memory).
fn recovery_without_superblock() -> CtrError {
    CtrError::new(
        EOPNOTSUPP,
        c"Recovery mode (R) on a device without a superblock is not implemented in integrity-rs",
    )
}

/// Keys the internal hash as dm-integrity's `get_mac`: with the key of the table line (hex,
/// decoded into memory wiped when dropped), or refused if the algorithm needs a key and none is
/// given (`ENOKEY`).
fn set_internal_hash_key(tfm: &mut Shash, spec: Option<table::AlgSpec<'_>>) -> Result<(), CtrError> {
    let bad_key = |e| CtrError::new(e, c"Error setting internal hash key");
    match spec {
        Some(spec) if spec.has_key() => {
            let mut key = SecretBuf::new(spec.key_len()).map_err(nomem)?;
            // The table parser checked the hex digits.
            spec.decode_key(key.as_mut_slice()).ok_or_else(|| bad_key(EINVAL))?;
            tfm.set_key(key.as_slice()).map_err(bad_key)
        }
        _ if tfm.needs_key() => Err(bad_key(ENOKEY)),
        _ => Ok(()),
    }
}

impl Integrity {
    fn block_bytes(&self) -> u32 {
        self.spb << 9
    }

    /// log2 of [`Self::block_bytes`]: blocks are counted with shifts, not divisions.
    fn block_shift(&self) -> u32 {
        self.spb.trailing_zeros() + 9
    }

    /// Computes the tag of the block at logical `sector` whose data `feed` hashes into the
    /// descriptor: the hash of the salt (with `fix_hmac`), the sector number (little-endian)
    /// and the data, zero-padded or cut to the tag size.
    fn tag(
        &self,
        sector: u64,
        feed: impl FnOnce(&mut crate::dm::hash::Desc<'_>) -> Result,
        out: &mut [u8],
    ) -> Result {
        let mut digest = [0u8; MAX_DIGEST_SIZE];
        // Only called with an internal hash.
        let tfm = self.tfm.as_ref().ok_or(EINVAL)?;
        let mut d = tfm.desc();
        d.init()?;
        if let Some(salt) = &self.salt {
            d.update(salt)?;
        }
        d.update(&sector.to_le_bytes())?;
        feed(&mut d)?;
        d.finup(&[], &mut digest)?;
        let n = tfm.digest_size().min(self.tag_size);
        out[..n].copy_from_slice(&digest[..n]);
        out[n..self.tag_size].fill(0);
        Ok(())
    }

    /// Reads (`write == false`) or writes the tags of the `tags.len() / tag_size` blocks from
    /// logical `sector` (within one interleave area, where they are consecutive bytes).
    fn rw_tags(&self, s: &MaySleep<'_>, sector: u64, tags: &mut [u8], write: bool) -> Result {
        let (mut block, offset) = self.geo.tag_buffer_and_offset(sector).ok_or(EIO)?;
        let mut offset = offset as usize;
        let mut meta = self.meta.lock();
        let mut pos = 0;
        while pos < tags.len() {
            let mut buf = meta.read_mut(s, block)?;
            let n = (buf.data().len() - offset).min(tags.len() - pos);
            if write {
                buf.copy_in(offset, &tags[pos..pos + n])?;
                buf.mark_dirty();
            } else {
                tags[pos..pos + n].copy_from_slice(&buf.data()[offset..offset + n]);
            }
            pos += n;
            block += 1;
            offset = 0;
        }
        Ok(())
    }

    /// Writes the filler tag of a discarded block over the tags of the `blocks` blocks from
    /// logical `sector` (within one interleave area).
    fn fill_discarded(&self, s: &MaySleep<'_>, sector: u64, blocks: u64) -> Result {
        let ts = self.tag_size;
        let per_chunk = (FILLER_CHUNK / ts) as u64;
        let mut filler = s.noio(|| KVec::from_elem(DISCARD_FILLER, per_chunk as usize * ts, GFP_KERNEL))?;
        let (mut at, mut left) = (sector, blocks);
        while left > 0 {
            let n = left.min(per_chunk);
            self.rw_tags(s, at, &mut filler[..n as usize * ts], true)?;
            at += n << self.spb.trailing_zeros();
            left -= n;
        }
        Ok(())
    }

    /// Writes the tags in the cache and flushes the device.
    fn flush_tags(&self, s: &MaySleep<'_>) -> Result {
        self.meta.lock().write_dirty(s)
    }

    /// Waits until data-device sectors `[start, start + sectors)` are in no other range, then
    /// takes them.
    fn lock_range(&self, start: u64, sectors: u64) {
        let end = start.saturating_add(sectors);
        let mut g = self.ranges.lock();
        while g.n == MAX_RANGES || g.barrier || g.overlaps(start, end) {
            self.range_freed.wait(&mut g);
        }
        let n = g.n;
        g.ranges[n] = (start, end);
        g.n += 1;
    }

    /// Takes the whole device once every range in use is released; ranges asked for meanwhile
    /// wait behind it (the bitmap flush must not starve). Only the flush worker, which runs
    /// once at a time, calls it.
    fn lock_all(&self) {
        let mut g = self.ranges.lock();
        while g.barrier {
            self.range_freed.wait(&mut g);
        }
        g.barrier = true;
        while g.n != 0 {
            self.range_freed.wait(&mut g);
        }
        g.barrier = false;
        g.ranges[0] = (0, u64::MAX);
        g.n = 1;
    }

    fn unlock_all(&self) {
        self.unlock_range(0, u64::MAX);
    }

    fn unlock_range(&self, start: u64, sectors: u64) {
        let end = start.saturating_add(sectors);
        {
            let mut g = self.ranges.lock();
            let n = g.n;
            if let Some(i) = g.ranges[..n].iter().position(|&r| r == (start, end)) {
                g.ranges[i] = g.ranges[n - 1];
                g.n -= 1;
            }
        }
        self.range_freed.notify_all();
    }

    /// Writes the superblock (after the tags it vouches for) if `force` or it changed.
    fn write_superblock(&self, s: &MaySleep<'_>, force: bool) -> Result {
        self.flush_tags(s)?;
        let mut g = self.sb.lock();
        if !force && !g.dirty {
            return Ok(());
        }
        let SbState { sb, area, dirty } = &mut *g;
        sb.set_version(self.bitmap_mode, false);
        sb.write(area).ok_or(EINVAL)?;
        let len = area.len();
        self.dev.write_sync_fua(s, self.geo.params().start, area, len)?;
        *dirty = false;
        Ok(())
    }

    /// Whether a read of `sectors` at logical `sector` is checked (not above the recalculation
    /// position, nor in B mode in a region still to be recalculated).
    fn read_is_checked(&self, sector: u64, sectors: u64) -> bool {
        if self.bitmap_mode && !self.bits.all_clear(&self.bm.lock().recalc, sector, sectors) {
            return false;
        }
        recalc::read_is_checked(&self.sb.lock().sb, sector, sectors)
    }

    /// Reads the superblock again on resume, as dm-integrity does (another table of the device,
    /// ours or the kernel's, may have written it since the constructor read it: the bitmap flag,
    /// the recalculation position); a `recalculate` flag of this table is kept. `Err` with the
    /// message when its layout changed or it cannot be read.
    fn reread_superblock(&self, s: &MaySleep<'_>) -> Result<(), &'static CStr> {
        let mut area = s
            .noio(|| KVec::from_elem(0u8, SB_BYTES, GFP_KERNEL))
            .map_err(|_| c"Cannot allocate superblock area")?;
        self.dev
            .read_sync(s, self.geo.params().start, &mut area, SB_BYTES)
            .map_err(|_| c"Error reading superblock")?;
        let disk = Superblock::parse(&area)
            .ok()
            .filter(|d| d.same_layout(&self.sb_at_load))
            .ok_or(c"The superblock was changed while the device was suspended")?;
        let mut g = self.sb.lock();
        let keep = g.sb.flags & superblock::SB_FLAG_RECALCULATING;
        g.sb = disk;
        g.area = area;
        if g.sb.flags & keep != keep {
            g.sb.flags |= keep;
            g.dirty = true;
        }
        Ok(())
    }

    /// Fails the device after an error on its metadata, as dm-integrity's `dm_integrity_io_error`:
    /// every bio fails from then on, and nothing more is written to the metadata (dm-bufio
    /// reports a write error once: a later flush would pass and let a clean state be written
    /// over missing tags).
    fn fail_device(&self, what: &str) {
        integrity_err!("{}: {}", self.dev.name(), what);
        self.failed.store(true, Ordering::Release);
    }

    /// First sector of the journal area, where the bitmap is.
    fn journal_start(&self) -> u64 {
        self.geo.params().start + u64::from(SB_SECTORS)
    }

    /// Writes the whole bitmap (`disk`) with FUA.
    fn write_bitmap(&self, s: &MaySleep<'_>, g: &mut BitmapState) -> Result {
        let len = g.disk.len();
        self.dev.write_sync_fua(s, self.journal_start(), &mut g.disk, len)
    }

    /// Reads the whole bitmap from the device into `disk`.
    fn read_bitmap(&self, s: &MaySleep<'_>, g: &mut BitmapState) -> Result {
        let len = g.disk.len();
        self.dev.read_sync(s, self.journal_start(), &mut g.disk, len)
    }

    /// B mode, before a write or discard of `sectors` at logical `sector` goes down (its range
    /// locked): unless their bits are known to be on disk, sets them and writes their bitmap
    /// blocks with FUA, then has the flush worker clear them later.
    fn mark_dirty(&self, ti: &Ti<Self>, s: &MaySleep<'_>, sector: u64, sectors: u64) -> Result {
        let bits = self.bits;
        let mut g = self.bm.lock();
        if bits.all_set(&g.may_write, sector, sectors) {
            return Ok(());
        }
        bits.set(&mut g.disk, sector, sectors);
        let (first, last) = bits.blocks_of(sector, sectors).ok_or(EINVAL)?;
        let bs = geometry::BITMAP_BLOCK_SIZE as usize;
        for b in first..=last {
            let at = usize::try_from(b).map_err(|_| EINVAL)? * bs;
            let BitmapState { disk, block, .. } = &mut *g;
            block[..bs].copy_from_slice(disk.get(at..at + bs).ok_or(EINVAL)?);
            self.dev
                .write_sync_fua(s, self.journal_start() + b * bitmap::BITMAP_BLOCK_SECTORS, block, bs)?;
        }
        bits.set(&mut g.may_write, sector, sectors);
        g.flush_pending = true;
        self.start_flush(ti, g, false);
        Ok(())
    }

    /// Queues the bitmap flush worker unless one is queued or running (`now`: without waiting
    /// for the interval).
    fn start_flush(&self, ti: &Ti<Self>, mut g: kernel::sync::MutexGuard<'_, BitmapState>, now: bool) {
        g.flush_now |= now;
        g.flush_pending = true;
        if g.flush_running || self.stop.load(Ordering::Acquire) {
            return;
        }
        g.flush_running = true;
        if ti.defer(Work::BitmapFlush).is_err() {
            g.flush_running = false;
            integrity_err!("{}: cannot start the bitmap flush", self.dev.name());
        }
    }

    /// The bitmap flush: every tag of a finished write on disk (with a device flush), then,
    /// with the whole device locked, the bits below the recalculation cleared and the bitmap
    /// written (dm-integrity's `bitmap_flush_work`).
    fn flush_bitmap(&self, s: &MaySleep<'_>) -> Result {
        if self.failed.load(Ordering::Acquire) {
            return Err(EIO);
        }
        self.flush_tags(s)?;
        self.lock_all();
        let r = (|| {
            self.flush_tags(s)?;
            let mut g = self.bm.lock();
            let limit = self.bits.flush_limit(&self.sb.lock().sb, self.geo.provided_data_sectors());
            let BitmapState { disk, may_write, .. } = &mut *g;
            self.bits.clear(disk, 0, limit);
            self.bits.clear(may_write, 0, limit);
            self.write_bitmap(s, &mut g)
        })();
        self.unlock_all();
        r
    }

    /// The flush worker: waits `bitmap_flush_interval` (unless asked to flush now), flushes,
    /// and goes on while writes set bits meanwhile; stops at `presuspend`.
    fn run_bitmap_flush(&self, s: &MaySleep<'_>) {
        loop {
            let start = self.now_ns();
            let wait = self.flush_interval_ms.saturating_mul(1_000_000);
            while !self.stop.load(Ordering::Acquire) && !self.bm.lock().flush_now {
                let left = wait.saturating_sub(self.now_ns().saturating_sub(start));
                if left == 0 {
                    break;
                }
                fsleep(Delta::from_nanos(left.min(MAX_RATE_SLEEP_NS) as i64));
            }
            if self.stop.load(Ordering::Acquire) {
                self.bm.lock().flush_running = false;
                return;
            }
            {
                let mut g = self.bm.lock();
                g.flush_pending = false;
                g.flush_now = false;
            }
            if self.flush_bitmap(s).is_err() {
                if !self.failed.load(Ordering::Acquire) {
                    self.fail_device("error writing bitmap");
                }
                self.bm.lock().flush_running = false;
                return;
            }
            let mut g = self.bm.lock();
            if !g.flush_pending || self.stop.load(Ordering::Acquire) {
                g.flush_running = false;
                return;
            }
        }
    }

    /// Writes an empty journal over the journal area (and so over the bitmap), as
    /// dm-integrity's `init_journal` does when it suspends in B mode.
    fn write_empty_journal(&self, s: &MaySleep<'_>) -> Result {
        self.write_erased_journal(s, 0)
    }

    /// Writes every section of the journal erased with commit sequence `seq` (FUA), as
    /// dm-integrity's `init_journal`.
    fn write_erased_journal(&self, s: &MaySleep<'_>, seq: u8) -> Result {
        self.write_erased_sections(s, 0, self.geo.params().journal_sections, seq)
    }

    /// Writes `count` sections from `first` erased with commit sequence `seq` (FUA).
    fn write_erased_sections(&self, s: &MaySleep<'_>, first: u32, count: u32, seq: u8) -> Result {
        const CHUNK: u32 = 64;
        let shape = self.geo.journal();
        let mut buf = s.noio(|| KVec::from_elem(0u8, CHUNK as usize * 512, GFP_KERNEL))?;
        let mut sector = [0u8; 512];
        for section in first..first + count {
            let mut at = self.geo.journal_section_start(section).ok_or(EINVAL)?;
            let mut j = 0;
            while j < shape.section_sectors {
                let n = (shape.section_sectors - j).min(CHUNK);
                for k in 0..n {
                    journal::erased_sector(&shape, section, j + k, seq, &mut sector);
                    let o = k as usize * 512;
                    buf[o..o + 512].copy_from_slice(&sector);
                }
                self.dev.write_sync_fua(s, at, &mut buf, n as usize * 512)?;
                at += u64::from(n);
                j += n;
            }
        }
        Ok(())
    }

    /// Formatting's writes, last in the constructor as in dm-integrity's: the whole journal
    /// empty (sequence [`format::INITIAL_COMMIT_SEQ`], every entry unused: the sectors of
    /// [`journal::erased_sector`]), then the superblock area with FUA. A failure refuses
    /// the table; a crash between the two leaves the superblock area blank, so the next load
    /// formats again.
    fn write_new_volume(&self, s: &MaySleep<'_>) -> Result<(), CtrError> {
        self.write_erased_journal(s, format::INITIAL_COMMIT_SEQ)
            .map_err(|e| CtrError::new(e, c"Error initializing journal"))?;
        self.write_superblock(s, true)
            .map_err(|e| CtrError::new(e, c"Error initializing superblock"))
    }

    /// dm-integrity's `replay_journal` on the first resume (any mode but `R`, the bitmap not in
    /// force): the committed sections of a journal a crash left (mode `J`) are written in place,
    /// oldest first, each block's data (its last bytes put back from the entry) and tag, every
    /// tag checked against the data first; then the journal is erased unless it was empty and
    /// whole. `Err` with what failed (dm-integrity fails the device and writes nothing more):
    /// a corrupt journal, a misaligned sector, a tag that does not match its data, an I/O error.
    fn replay_journal(&self, s: &MaySleep<'_>) -> Result<(), &'static str> {
        const CHUNK: u32 = 64;
        let shape = self.geo.journal();
        let sections = self.geo.params().journal_sections;
        let log2_spb = self.spb.trailing_zeros();
        let provided = self.geo.provided_data_sectors();
        let nomem = |_| "allocating journal buffers";
        let mut summary = s.noio(|| KVec::from_elem(0u8, sections as usize, GFP_KERNEL)).map_err(nomem)?;
        let mut buf = s.noio(|| KVec::from_elem(0u8, CHUNK as usize * 512, GFP_KERNEL)).map_err(nomem)?;
        let mut scan = journal::Scan::new(shape, &mut summary);
        let mut sector = [0u8; 512];
        let mut at = self.journal_start();
        for section in 0..sections {
            let mut j = 0;
            while j < shape.section_sectors {
                let n = (shape.section_sectors - j).min(CHUNK);
                self.dev.read_sync(s, at, &mut buf, n as usize * 512).map_err(|_| "reading journal")?;
                for k in 0..n {
                    let o = k as usize * 512;
                    sector.copy_from_slice(&buf[o..o + 512]);
                    scan.sector(section, j + k, &sector);
                }
                at += u64::from(n);
                j += n;
            }
        }
        let plan = scan.plan(self.journal_mode).map_err(|c| c.message())?;
        if plan.replay {
            let bb = self.block_bytes() as usize;
            let ts = self.tag_size;
            let mut data = s.noio(|| KVec::from_elem(0u8, bb, GFP_KERNEL)).map_err(nomem)?;
            let entry_bytes = journal_entry_bytes();
            let mut tag = [0u8; MAX_TAG_SIZE as usize];
            let mut computed = [0u8; MAX_TAG_SIZE as usize];
            for k in 0..plan.sections {
                let section = plan.section(k, sections);
                let base = self.geo.journal_section_start(section).ok_or("journal section")?;
                self.dev.read_sync(s, base, &mut buf, entry_bytes).map_err(|_| "reading journal")?;
                for e in 0..shape.section_entries {
                    let entry = journal::entry(&shape, &buf[..entry_bytes], e).ok_or("journal entry")?;
                    let sector = match journal::action(entry, log2_spb, provided) {
                        journal::Action::Unused | journal::Action::OutOfRange => continue,
                        journal::Action::Misaligned => return Err("invalid sector in journal"),
                        journal::Action::Write { sector } => sector,
                    };
                    let ds = shape.entry_data_sector(e, log2_spb).ok_or("journal entry")?;
                    self.dev
                        .read_sync(s, base + u64::from(ds), &mut data, bb)
                        .map_err(|_| "reading journal")?;
                    journal::restore_last_bytes(entry, log2_spb, &mut data);
                    tag[..ts].copy_from_slice(journal::entry_tag(entry, log2_spb, ts));
                    // The layer above's tags are its own to check.
                    if self.tfm.is_some() {
                        self.tag(sector, |d| d.update(&data[..bb]), &mut computed)
                            .map_err(|_| "computing tags")?;
                        if computed[..ts] != tag[..ts] {
                            self.mismatches.fetch_add(1, Ordering::Relaxed);
                            return Err("tag mismatch when replaying journal");
                        }
                    }
                    let phys = self.geo.data_sector(sector).ok_or("journal entry")?;
                    self.dev.write_sync_fua(s, phys, &mut data, bb).map_err(|_| "copying from journal")?;
                    self.rw_tags(s, sector, &mut tag[..ts], true).map_err(|_| "writing tags")?;
                }
            }
            self.flush_tags(s).map_err(|_| "writing tags")?;
        }
        if let Some(seq) = plan.erase {
            self.write_erased_journal(s, seq).map_err(|_| "writing journal")?;
        }
        let mut w = self.jw.lock();
        w.cursor = journal::Cursor::after(&plan);
        w.unflushed = 0;
        Ok(())
    }

    /// Mode `J`: the write of `blocks` blocks at logical `sector` (its range locked), a section
    /// at a time: the blocks and their tags go to the journal's next section, which is committed
    /// (every sector with the commit id, FUA), then in place (data with FUA, tags into the tag
    /// cache) before the next. A section is written over only once the tag cache and the device
    /// were flushed after its blocks went in place. `Err` with what failed.
    fn journal_write(&self, s: &MaySleep<'_>, bio: &Bio, sector: u64, blocks: u64) -> Result<(), &'static str> {
        let shape = self.geo.journal();
        let sections = self.geo.params().journal_sections;
        let log2_spb = self.spb.trailing_zeros();
        let bb = self.block_bytes() as usize;
        let ts = self.tag_size;
        let mut g = self.jw.lock();
        let mut done = 0u64;
        while done < blocks {
            let n = (blocks - done).min(shape.section_entries.into()) as u32;
            if g.unflushed >= sections {
                self.flush_tags(s).map_err(|_| "writing tags")?;
                g.unflushed = 0;
            }
            let journal::Cursor { section, seq } = g.cursor;
            let JournalWriter { entries, data, tags, .. } = &mut *g;
            // The blocks, copied once: the tags are computed from the copy written.
            let (first, last) = (done as u32, done as u32 + n);
            bio.for_each_block(bb as u32, |i, b: &IoBlock<'_>| {
                if (first..last).contains(&i) {
                    let at = (i - first) as usize * bb;
                    b.copy_to(&mut data[at..at + bb]);
                }
                Ok::<(), ()>(())
            })
            .map_err(|_| "reading the bio")?;
            data[n as usize * bb..].fill(0);
            let mut sector_buf = [0u8; 512];
            for k in 0..journal::JOURNAL_ENTRY_SECTORS {
                journal::erased_sector(&shape, section, k, seq, &mut sector_buf);
                let o = k as usize * 512;
                entries[o..o + 512].copy_from_slice(&sector_buf);
            }
            if self.tfm.is_none() {
                // The layer above's tags (zeroes for a write without them, as dm-integrity).
                let t = &mut tags[..n as usize * ts];
                match bio.integrity_size() {
                    Some(_) => bio
                        .copy_integrity_to((done as usize * ts) as u32, t)
                        .map_err(|()| "reading the bio's tags")?,
                    None => t.fill(0),
                }
            }
            for e in 0..n as usize {
                let at = sector + ((done + e as u64) << log2_spb);
                let block = &data[e * bb..(e + 1) * bb];
                if self.tfm.is_some() {
                    self.tag(at, |d| d.update(block), &mut tags[e * ts..(e + 1) * ts])
                        .map_err(|_| "computing tags")?;
                }
                journal::write_entry(&shape, entries, e as u32, log2_spb, at, block, &tags[e * ts..(e + 1) * ts])
                    .ok_or("journal entry")?;
            }
            let data_len = data.len();
            journal::stamp_commit_ids(data, section, journal::JOURNAL_ENTRY_SECTORS, seq);
            // The commit: the whole section, entries then data, with FUA.
            let start = self.geo.journal_section_start(section).ok_or("journal section")?;
            self.dev
                .write_sync_fua(s, start, entries, journal_entry_bytes())
                .and_then(|()| {
                    self.dev.write_sync_fua(s, start + u64::from(journal::JOURNAL_ENTRY_SECTORS), data, data_len)
                })
                .map_err(|_| "writing journal")?;
            // In place: the blocks (their last bytes back), then the tags.
            for e in 0..n {
                let entry = journal::entry(&shape, entries, e).ok_or("journal entry")?;
                let at = e as usize * bb;
                journal::restore_last_bytes(entry, log2_spb, &mut data[at..at + bb]);
            }
            let at = sector + (done << log2_spb);
            let phys = self.geo.data_sector(at).ok_or("journal entry")?;
            // The data buffer starts with the blocks: written from its start.
            self.dev
                .write_sync_fua(s, phys, data, n as usize * bb)
                .map_err(|_| "copying from journal")?;
            self.rw_tags(s, at, &mut tags[..n as usize * ts], true).map_err(|_| "writing tags")?;
            g.cursor.advance(sections);
            g.unflushed += 1;
            g.wrote = true;
            done += u64::from(n);
        }
        Ok(())
    }

    /// Mode `J`'s clean suspend (dm-integrity's `postsuspend`): every block is in place and the
    /// tags on disk; if a section was committed since the resume, the journal is erased, from the
    /// writer's section to the end with its sequence and before it with the next, so that the
    /// next resume (ours or the kernel's) finds it whole and empty.
    fn erase_journal_after_writes(&self, s: &MaySleep<'_>) -> Result {
        let sections = self.geo.params().journal_sections;
        let mut g = self.jw.lock();
        g.unflushed = 0;
        if !g.wrote {
            return Ok(());
        }
        for (first, count, seq) in g.cursor.erase_ranges(sections) {
            if count > 0 {
                self.write_erased_sections(s, first, count, seq)?;
            }
        }
        Ok(())
    }

    /// Checks a read's data against its tags; `Err` with the status to fail it with.
    fn verify_read(&self, ti: &Ti<Self>, io: &DoneIo<'_>, sector: u64, s: &MaySleep<'_>) -> Result<(), u8> {
        let ts = self.tag_size;
        let blocks = (io.size() >> self.block_shift()) as usize;
        let mut stored = s
            .noio(|| KVec::from_elem(0u8, blocks * ts, GFP_KERNEL))
            .map_err(|_| bindings::DM_RUST_BLK_STS_IOERR)?;
        if self.rw_tags(s, sector, &mut stored, false).is_err() {
            integrity_err!("{}: Error reading tags", self.dev.name());
            return Err(bindings::DM_RUST_BLK_STS_IOERR);
        }
        let spb = u64::from(self.spb);
        let mut computed = [0u8; MAX_TAG_SIZE as usize];
        let r = io.for_each_block(self.block_bytes(), |i, block: &mut IoBlock<'_>| {
            let i = i as usize;
            let at = sector + i as u64 * spb;
            self.tag(at, |d| d.update_block(block), &mut computed)
                .map_err(|_| None)?;
            let tag = &stored[i * ts..(i + 1) * ts];
            if computed[..ts] != *tag && !(self.discards && tag.iter().all(|&b| b == DISCARD_FILLER)) {
                return Err(Some(at));
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(()),
            Err(BlockError::Callback(Some(at))) => {
                self.mismatches.fetch_add(1, Ordering::Relaxed);
                if system::log_ratelimited() {
                    integrity_err!("{}: Checksum failed at sector 0x{:x}", self.dev.name(), at);
                }
                io.audit(c"integrity", c"integrity-checksum", at, 0);
                let _ = ti;
                Err(bindings::DM_RUST_BLK_STS_PROTECTION)
            }
            Err(_) => Err(bindings::DM_RUST_BLK_STS_IOERR),
        }
    }

    /// Without an internal hash: stores a write's tags from its integrity payload, or copies a
    /// read's tags into it, for the `sectors` from logical `sector` (within one interleave area).
    fn external_tags(&self, s: &MaySleep<'_>, bio: &mut Bio, sector: u64, sectors: u64) -> Result<(), ()> {
        let len = (sectors >> self.spb.trailing_zeros()) as usize * self.tag_size;
        let mut tags = s.noio(|| KVec::from_elem(0u8, len, GFP_KERNEL)).map_err(|_| ())?;
        match bio.op() {
            Op::Write => {
                bio.copy_integrity_to(0, &mut tags)?;
                self.rw_tags(s, sector, &mut tags, true).map_err(|_| ())
            }
            Op::Read => {
                self.rw_tags(s, sector, &mut tags, false).map_err(|_| ())?;
                bio.copy_integrity_from(0, &tags)
            }
            _ => Ok(()),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(0)
    }

    /// Queues the recalculation worker unless one is queued or running, it is paused, the
    /// device is suspended, or there is nothing to recalculate.
    fn start_worker(&self, ti: &Ti<Self>) {
        let needed = {
            let g = self.sb.lock();
            g.sb.has(superblock::SB_FLAG_RECALCULATING)
                && g.sb.recalc_sector < self.geo.provided_data_sectors()
        };
        let mut c = self.recalc_ctl.lock();
        if c.running
            || c.control.paused()
            || !needed
            || self.recovery
            || self.stop.load(Ordering::Acquire)
        {
            return;
        }
        c.running = true;
        if ti.defer(Work::Recalc).is_err() {
            c.running = false;
            integrity_err!("{}: cannot start the recalculation", self.dev.name());
        }
    }

    /// One range of the recalculation: read the data, write its tags.
    fn recalc_range(&self, s: &MaySleep<'_>, r: recalc::Range, buf: &mut KVec<u8>) -> Result {
        let phys = self.geo.data_sector(r.start).ok_or(EIO)?;
        let bytes = (r.sectors as usize) << 9;
        self.dev.read_sync(s, phys, buf, bytes)?;
        let bb = self.block_bytes() as usize;
        let blocks = bytes >> self.block_shift();
        let ts = self.tag_size;
        let mut tags = s.noio(|| KVec::from_elem(0u8, blocks * ts, GFP_KERNEL))?;
        for i in 0..blocks {
            let data = &buf[i * bb..(i + 1) * bb];
            let at = r.start + (i as u64) * u64::from(self.spb);
            self.tag(at, |d| d.update(data), &mut tags[i * ts..(i + 1) * ts])?;
        }
        self.rw_tags(s, r.start, &mut tags, true)
    }
}

impl Defer for Integrity {
    type Item = Work;

    fn run_deferred(&self, ti: &Ti<Self>, w: Work, s: &MaySleep<'_>) {
        match w {
            Work::Recalc => self.run_recalc(ti, s),
            Work::BitmapFlush => self.run_bitmap_flush(s),
        }
    }
}

impl Integrity {
    /// The recalculation worker: from `recalc_sector` to the end, one range at a time, each
    /// under the lock of its data range; the position goes to the superblock every
    /// checkpoint and when the worker stops (`presuspend`) or finishes. In B mode only the
    /// regions the bitmap marks are recalculated, and their bits are cleared behind it.
    fn run_recalc(&self, ti: &Ti<Self>, s: &MaySleep<'_>) {
        let chunk = (RECALC_CHUNK_SECTORS as usize) << 9;
        let Ok(mut buf) = KVec::from_elem(0u8, chunk, GFP_KERNEL) else {
            integrity_err!("{}: cannot allocate the recalculation buffer", self.dev.name());
            return;
        };
        let provided = self.geo.provided_data_sectors();
        let log2_i = self.geo.params().log2_interleave_sectors;
        let mut checkpoints = recalc::Checkpoints::default();
        let mut paused = false;
        while !self.stop.load(Ordering::Acquire) {
            let pos = self.sb.lock().sb.recalc_sector;
            if self.bitmap_mode {
                // Clean regions need no work: the position moves over them at once (no range
                // to lock, no checkpoint to write), up to the next marked one.
                let next = self.bits.next_marked(&self.bm.lock().recalc, pos, provided);
                if next > pos {
                    let mut g = self.sb.lock();
                    g.sb.recalc_sector = next;
                    g.dirty = true;
                    continue;
                }
            }
            let Some(r) = recalc::next_range(pos, provided, Some(log2_i), RECALC_CHUNK_SECTORS)
            else {
                break;
            };
            // The controls of `dmsetup message`: paused (the worker ends, `running` cleared
            // with the decision so that a resume message queues a new one), or rate-limited.
            let step = {
                let mut c = self.recalc_ctl.lock();
                let step = c.control.step(self.now_ns(), r.sectors << 9);
                if step == recalc::Step::Paused {
                    c.running = false;
                }
                step
            };
            match step {
                recalc::Step::Go => {}
                recalc::Step::Wait(ns) => {
                    let ns = ns.min(MAX_RATE_SLEEP_NS) as i64;
                    fsleep(Delta::from_nanos(ns));
                    continue;
                }
                recalc::Step::Paused => {
                    paused = true;
                    break;
                }
            }
            if checkpoints.before_range() {
                if self.write_superblock(s, true).is_err() {
                    integrity_err!("{}: error writing superblock", self.dev.name());
                    return;
                }
                if self.bitmap_mode {
                    self.start_flush(ti, self.bm.lock(), false);
                }
            }
            let Some(phys) = self.geo.data_sector(r.start) else {
                break;
            };
            self.lock_range(phys, r.sectors);
            let res = if self.bitmap_mode {
                // Only the marked part of the range; the bits it finishes are cleared.
                let part = self.bits.recalc_part(&self.bm.lock().recalc, r.start, r.sectors);
                let res = match part {
                    Some((start, sectors)) => self.recalc_range(s, recalc::Range { start, sectors }, &mut buf),
                    None => Ok(()),
                };
                if res.is_ok() {
                    let (start, n) = self.bits.recalc_done(r.start, r.sectors);
                    self.bits.clear(&mut self.bm.lock().recalc, start, n);
                }
                res
            } else {
                self.recalc_range(s, r, &mut buf)
            };
            self.unlock_range(phys, r.sectors);
            if res.is_err() {
                integrity_err!("{}: error recalculating tags at sector 0x{:x}", self.dev.name(), r.start);
                break;
            }
            let mut g = self.sb.lock();
            g.sb.recalc_sector = r.end();
            g.dirty = true;
        }
        if self.write_superblock(s, false).is_err() {
            integrity_err!("{}: error writing superblock", self.dev.name());
        }
        if self.bitmap_mode && self.sb.lock().sb.recalc_sector >= provided {
            // Finished: nothing is left to recalculate; the bits go at the next flush, now.
            let mut g = self.bm.lock();
            g.recalc.fill(0);
            self.start_flush(ti, g, true);
        }
        if !paused {
            self.recalc_ctl.lock().running = false;
        }
    }
}

#[vtable]
impl Target for Integrity {
    const NAME: &'static CStr = c"integrity-rs";
    const UPSTREAM_NAME: Option<&'static CStr> = Some(c"integrity");
    // dm-integrity 1.15.0's features are what integritysetup looks at; those we refuse are
    // refused by name in the constructor.
    const VERSION: [u32; 3] = [1, 15, 0];
    // As dm-integrity: alone in its table, and the mapped device's integrity profile is its own
    // (the layer above's tags without an internal hash, none with one), not the data device's.
    const FEATURES: u64 = (bindings::DM_TARGET_SINGLETON | bindings::DM_TARGET_INTEGRITY) as u64;
    const WORKQUEUE: Option<WorkqueueConfig> = Some(WorkqueueConfig {
        name: c"kintegrity-rs",
        flags: flags::MEM_RECLAIM | flags::PERCPU,
        max_active: MaxActive::Default,
    });
    const MAP_WORKQUEUE: Option<WorkqueueConfig> = Some(WorkqueueConfig {
        name: c"kintegrity-rs-map",
        flags: flags::MEM_RECLAIM | flags::PERCPU,
        max_active: MaxActive::Default,
    });
    const AUDIT_PREFIX: Option<&'static CStr> = Some(c"integrity");

    fn new(ctx: &mut TargetCtx<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        let line = SavedArgs::new(args).map_err(nomem)?;
        let t = IntegrityTable::parse(args, bindings::DM_RUST_HZ)?;
        refuse_unimplemented(&t)?;
        let dev = ctx.get_device(t.dev())?;
        let spec = t.internal_hash();
        let tfm = match spec {
            Some(a) => {
                let mut tfm = Shash::new(a.alg()).map_err(|e| CtrError::new(e, c"Invalid internal hash"))?;
                set_internal_hash_key(&mut tfm, spec)?;
                Some(tfm)
            }
            None => None,
        };
        let tag_size = t.check(tfm.as_ref().map(|h| h.digest_size() as u32))?;
        // After dm-integrity's own checks, so that an unkeyed hash gets its message ("Keyed
        // discard can only be used with keyed internal hash").
        if t.discard_keyed() {
            return Err(CtrError::new(
                EOPNOTSUPP,
                c"allow_discards_keyed is not implemented in integrity-rs",
            ));
        }

        // The superblock: refused unless it is one, for this table, and fits the device.
        let start = t.start();
        let mut area = KVec::from_elem(0u8, SB_BYTES, GFP_KERNEL).map_err(nomem)?;
        dev.read_sync(ctx.may_sleep(), start, &mut area, SB_BYTES)
            .map_err(|e| CtrError::new(e, c"Error reading superblock"))?;
        let mut formatting = false;
        let mut sb = match superblock::probe(&area) {
            Ok(Probe::Superblock(sb)) => sb,
            // dm-integrity makes a superblock up in memory in mode R and writes nothing.
            Ok(Probe::Blank) if t.mode() == Mode::Recovery => return Err(recovery_without_superblock()),
            Ok(Probe::Blank) => {
                // A blank device is formatted, as dm-integrity's constructor does (what
                // `integritysetup format` relies on). Nothing is written until every check
                // below has passed and the target is built (`write_new_volume`).
                let mut sb = format::new_superblock(&t, tag_size, dev.sectors(), None)?;
                if format::needs_salt(&sb) {
                    let mut salt = SecretBuf::new(superblock::SALT_SIZE).map_err(nomem)?;
                    salt.randomize();
                    sb.salt.copy_from_slice(salt.as_slice());
                }
                formatting = true;
                sb
            }
            // dm-integrity takes any area without the magic in mode R, with a superblock made
            // in memory for the table.
            Err(superblock::SuperblockError::NotInitialized) if t.mode() == Mode::Recovery => {
                return Err(recovery_without_superblock())
            }
            Err(e) => return Err(CtrError::new(EINVAL, e.message())),
        };
        let view = TableView {
            inline: false,
            tag_size,
            log2_sectors_per_block: t.log2_sectors_per_block(),
            meta_device: false,
            discard_keyed: t.discard_keyed(),
            journal_mac: false,
            journal_mac_key: false,
            fix_hmac: t.fix_hmac(),
        };
        sb.check(&view).map_err(|m| CtrError::new(EINVAL, m))?;
        // The layout from the device's size, as dm-integrity's constructor; a superblock that
        // recorded another size (the device was resized) gets the new one on the next write.
        let geo = geometry::open(&sb, None, dev.sectors(), start, t.log2_buffer_sectors())
            .map_err(|e| CtrError::new(EINVAL, e.message()))?;
        let params = *geo.params();
        table::check_length(ctx.len(), geo.provided_data_sectors())?;
        let mut dirty = false;
        let old_provided = sb.provided_data_sectors;
        if sb.provided_data_sectors != geo.provided_data_sectors() {
            sb.provided_data_sectors = geo.provided_data_sectors();
            dirty = true;
        }
        let flags_before = sb.flags;
        t.apply_recalculate(&mut sb, geo.provided_data_sectors())
            .map_err(|e| {
                // dm-integrity's errno for this one refusal.
                if e == table::HMAC_RECALCULATE_REFUSED {
                    CtrError::new(EOPNOTSUPP, e.0)
                } else {
                    CtrError::from(e)
                }
            })?;
        dirty |= sb.flags != flags_before;

        let buffer_bytes = 512u32 << params.log2_buffer_sectors;
        let mut client = BufioClient::new(dev.try_clone(), buffer_bytes, 1)
            .map_err(|e| CtrError::new(e, c"Cannot initialize dm-bufio"))?;
        client.set_sector_offset(start + u64::from(geo.initial_sectors()));

        // The bitmap, for every mode but R: B mode keeps it, D mode reads one B mode left dirty.
        let sectors_per_bit = t.log2_sectors_per_bitmap_bit().map(|l| 1u64 << l.min(63));
        let bits = Bits::new(&geometry::bitmap(&geo, sectors_per_bit), t.log2_sectors_per_block());
        let bitmap_bytes = if t.mode() == Mode::Recovery {
            0
        } else {
            usize::try_from(bits.bytes()).map_err(nomem)?
        };
        let journal_bytes = u64::from(geo.journal().section_sectors) * u64::from(params.journal_sections) * 512;
        if t.mode() == Mode::Bitmap && bits.bytes() > journal_bytes {
            // Cannot happen with dm-integrity's sizes (journal sections are whole 4 KiB
            // blocks); refused rather than writing past the journal.
            return Err(CtrError::new(EINVAL, c"The bitmap does not fit in the journal"));
        }
        let bm_only = |n: usize| if t.mode() == Mode::Bitmap { n } else { 0 };
        let no_bitmap = |_| CtrError::new(ENOMEM, c"Could not allocate memory for bitmap");
        let bm = BitmapState {
            disk: KVec::from_elem(0u8, bitmap_bytes, GFP_KERNEL).map_err(no_bitmap)?,
            may_write: KVec::from_elem(0u8, bm_only(bitmap_bytes), GFP_KERNEL).map_err(no_bitmap)?,
            recalc: KVec::from_elem(0u8, bm_only(bitmap_bytes), GFP_KERNEL).map_err(no_bitmap)?,
            block: KVec::from_elem(0u8, bm_only(geometry::BITMAP_BLOCK_SIZE as usize), GFP_KERNEL)
                .map_err(no_bitmap)?,
            flush_running: false,
            flush_pending: false,
            flush_now: false,
        };

        // Bios never cross an interleave area: their data and tags are each contiguous. In B
        // mode, as dm-integrity, not a bitmap block either (its 32768 bits' sectors, cut to
        // 32 bits as the kernel's `unsigned int`).
        let mut max_io = 1u32 << params.log2_interleave_sectors;
        if t.mode() == Mode::Bitmap {
            let per_block = (bits.sectors_per_bit().wrapping_mul(bitmap::BITS_PER_BLOCK)) as u32;
            max_io = max_io.min(if per_block == 0 { 1 << 31 } else { per_block });
        }
        ctx.set_max_io_len(max_io)?;
        ctx.set_num_flush_bios(1);
        if t.allow_discards() {
            ctx.set_num_discard_bios(1);
        }

        // Mode J's buffers: one section.
        let shape = geo.journal();
        let j_only = |n: usize| if t.mode() == Mode::Journal { n } else { 0 };
        let jw = JournalWriter {
            cursor: journal::Cursor { section: 0, seq: 1 },
            entries: KVec::from_elem(0u8, j_only(journal_entry_bytes()), GFP_KERNEL).map_err(nomem)?,
            data: KVec::from_elem(
                0u8,
                j_only((shape.section_entries as usize) << (9 + t.log2_sectors_per_block())),
                GFP_KERNEL,
            )
            .map_err(nomem)?,
            tags: KVec::from_elem(0u8, j_only(shape.section_entries as usize * tag_size as usize), GFP_KERNEL)
                .map_err(nomem)?,
            unflushed: 0,
            wrote: false,
        };

        let salt = sb.has(SB_FLAG_FIXED_HMAC).then_some(sb.salt);
        let sb_at_load = sb;
        let len = ctx.len();
        let state = pin_init!(Self {
            dev,
            tfm,
            geo,
            tag_size: tag_size as usize,
            spb: 1u32 << t.log2_sectors_per_block(),
            salt,
            discards: t.allow_discards(),
            recovery: t.mode() == Mode::Recovery,
            bitmap_mode: t.mode() == Mode::Bitmap,
            journal_mode: t.mode() == Mode::Journal,
            jw <- new_mutex!(jw),
            bits,
            flush_interval_ms: table::round_to_jiffies(t.bitmap_flush_interval_ms(), bindings::DM_RUST_HZ),
            old_provided: AtomicU64::new(old_provided),
            bm <- new_mutex!(bm),
            sb_at_load,
            failed: AtomicBool::new(false),
            journal_uptodate: AtomicBool::new(false),
            meta <- new_mutex!(client),
            sb <- new_mutex!(SbState { sb, area, dirty }),
            ranges <- new_mutex!(RangeSet { ranges: [(0, 0); MAX_RANGES], n: 0, barrier: false }),
            range_freed <- new_condvar!(),
            mismatches: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            reset_recalculate: t.reset_recalculate(),
            recalc_ctl <- new_mutex!(RecalcCtl { control: recalc::Control::new(0), running: false }),
            epoch: Instant::<Monotonic>::now(),
            line,
            len,
        });
        let target = KBox::pin_init(state, GFP_KERNEL).map_err(nomem)?;
        if formatting {
            target.write_new_volume(ctx.may_sleep())?;
        }
        Ok(target)
    }

    fn map(&self, ti: &Ti<Self>, bio: &mut Bio) -> MapResult {
        if self.failed.load(Ordering::Acquire) {
            return MapResult::Kill;
        }
        // Tags from the layer above: exactly one per block, and only without an internal hash.
        if let Some(size) = bio.integrity_size() {
            if self.tfm.is_some() {
                integrity_err!("Unexpected integrity data when using internal hash");
                return MapResult::Kill;
            }
            let wanted = (bio.sectors() >> self.spb.trailing_zeros()) * self.tag_size as u64;
            if u64::from(size) != wanted {
                integrity_err!("Invalid integrity data size {}, expected {}", size, wanted);
                return MapResult::Kill;
            }
        }
        match bio.op() {
            // Mode R is read-only: writes and discards fail, as dm-integrity's.
            Op::Write | Op::Discard if self.recovery => MapResult::Kill,
            Op::Read | Op::Write => MapResult::Defer,
            Op::Flush => MapResult::Defer,
            // Device-mapper does not split discards at `max_io_len`: one that crosses an
            // interleave area is cut there, as dm-integrity does (its tags and data are each
            // contiguous only within an area).
            Op::Discard if self.discards => {
                let Some(sector) = bio.target_sector(ti) else {
                    return MapResult::Kill;
                };
                let area = 1u64 << self.geo.params().log2_interleave_sectors;
                let left = area - (sector & (area - 1));
                match u32::try_from(left) {
                    Ok(n) if left < bio.sectors() => MapResult::DeferFirst(n),
                    _ => MapResult::Defer,
                }
            }
            _ => MapResult::Kill,
        }
    }

    fn map_deferred(&self, ti: &Ti<Self>, bio: &mut Bio, s: &MaySleep<'_>) -> Deferred {
        let Some(sector) = bio.target_sector(ti) else {
            // An empty flush: what completed writes left in the tag cache goes to disk with it.
            return match self.flush_tags(s) {
                Ok(()) => {
                    if self.journal_mode {
                        self.jw.lock().unflushed = 0;
                    }
                    Deferred::Complete(bindings::DM_RUST_BLK_STS_OK)
                }
                Err(_) => Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR),
            };
        };
        let sectors = bio.sectors();
        let spb = u64::from(self.spb);
        if sector.saturating_add(sectors) > self.geo.provided_data_sectors()
            || (sector | sectors) & (spb - 1) != 0
        {
            integrity_err!("Bio not aligned on {} sectors or out of range: 0x{:x}, 0x{:x}", spb, sector, sectors);
            return Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR);
        }
        let Some(phys) = self.geo.data_sector(sector) else {
            return Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR);
        };
        self.lock_range(phys, sectors);
        if self.bitmap_mode
            && matches!(bio.op(), Op::Write | Op::Discard)
            && self.mark_dirty(ti, s, sector, sectors).is_err()
        {
            self.fail_device("error writing bitmap");
            self.unlock_range(phys, sectors);
            return Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR);
        }
        if bio.op() == Op::Discard {
            // The filler tags first (as dm-integrity, into the tag cache), then the discard goes
            // down; a read of those blocks then returns what the device gives, unchecked.
            if self.fill_discarded(s, sector, sectors >> self.spb.trailing_zeros()).is_err() {
                integrity_err!("{}: error writing tags", self.dev.name());
                self.unlock_range(phys, sectors);
                return Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR);
            }
        } else if bio.op() == Op::Write && self.journal_mode {
            // Through the journal, and in place, before it completes.
            let r = self.journal_write(s, bio, sector, sectors >> self.spb.trailing_zeros());
            self.unlock_range(phys, sectors);
            return match r {
                Ok(()) => Deferred::Complete(bindings::DM_RUST_BLK_STS_OK),
                Err(what) => {
                    self.fail_device(what);
                    Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR)
                }
            };
        } else if self.tfm.is_none() {
            // The layer above's tags: a write's stored, a read's handed up before it goes down
            // (its range is locked: no write changes them in between). Without a payload the
            // tags are left as they are, as dm-integrity does.
            if bio.integrity_size().is_some() && self.external_tags(s, bio, sector, sectors).is_err() {
                integrity_err!("{}: error reading or writing tags", self.dev.name());
                self.unlock_range(phys, sectors);
                return Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR);
            }
        } else if bio.op() == Op::Write {
            let ts = self.tag_size;
            let blocks = (sectors >> self.spb.trailing_zeros()) as usize;
            let r = s
                .noio(|| KVec::from_elem(0u8, blocks * ts, GFP_KERNEL))
                .map_err(|_| ())
                .and_then(|mut tags| {
                    bio.for_each_block(self.block_bytes(), |i, block: &IoBlock<'_>| {
                        let i = i as usize;
                        self.tag(sector + i as u64 * spb, |d| d.update_block(block), &mut tags[i * ts..(i + 1) * ts])
                    })
                    .map_err(|_| ())?;
                    self.rw_tags(s, sector, &mut tags, true).map_err(|_| ())
                });
            if r.is_err() {
                integrity_err!("{}: error writing tags", self.dev.name());
                self.unlock_range(phys, sectors);
                return Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR);
            }
        }
        bio.remap(&self.dev, phys);
        Deferred::RemappedCompleteInWork
    }

    fn io_done(&self, ti: &Ti<Self>, io: &mut DoneIo<'_>, s: &MaySleep<'_>) -> u8 {
        let phys = io.sector();
        let sectors = u64::from(io.size() >> 9);
        let mut status = io.lower_status();
        if status == bindings::DM_RUST_BLK_STS_OK {
            match (io.op(), self.geo.logical_sector(phys)) {
                (Op::Read, Some(sector)) => {
                    if self.tfm.is_some() && !self.recovery && self.read_is_checked(sector, sectors) {
                        if let Err(st) = self.verify_read(ti, io, sector, s) {
                            status = st;
                        }
                    }
                }
                (Op::Discard, Some(_)) => {}
                (Op::Write, Some(_)) => {
                    // FUA: the tags must be as durable as the data.
                    if io.is_fua() && self.flush_tags(s).is_err() {
                        status = bindings::DM_RUST_BLK_STS_IOERR;
                    }
                }
                _ => status = bindings::DM_RUST_BLK_STS_IOERR,
            }
        }
        self.unlock_range(phys, sectors);
        status
    }

    fn presuspend(&self, _ti: &Ti<Self>, _s: &MaySleep<'_>) {
        // The worker stops before its next range; the adapter waits for it before `postsuspend`.
        self.stop.store(true, Ordering::Release);
    }

    fn postsuspend(&self, _ti: &Ti<Self>, s: &MaySleep<'_>) {
        // The next resume does not read the journal again (dm-integrity's `journal_uptodate`).
        self.journal_uptodate.store(true, Ordering::Release);
        // A failed device writes no more metadata (its superblock may even be another format's
        // now, see `resume`).
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        // The worker has stopped (the adapter drained the workqueue) and written its position;
        // what is left in the tag cache goes to disk now: no metadata I/O after this.
        if self.flush_tags(s).is_err() {
            // Tags may be missing: the bitmap stays in force, for a recalculation next time.
            self.fail_device("error writing tags");
            return;
        }
        // J mode, as dm-integrity: every block is in place and its tag on disk; the journal is
        // left whole and empty.
        if self.journal_mode && self.erase_journal_after_writes(s).is_err() {
            self.fail_device("error writing journal");
            return;
        }
        // B mode, as dm-integrity: every tag is on disk, so the bitmap is no longer in force;
        // an empty journal goes over it and the superblock loses the dirty-bitmap flag.
        if self.bitmap_mode {
            if self.write_empty_journal(s).is_err() {
                self.fail_device("error writing journal");
                return;
            }
            self.sb.lock().sb.flags &= !SB_FLAG_DIRTY_BITMAP;
            if self.write_superblock(s, true).is_err() {
                self.fail_device("error writing superblock");
            }
        }
    }

    fn resume(&self, ti: &Ti<Self>, s: &MaySleep<'_>) {
        // Mode R writes nothing: no superblock, no recalculation (dm-integrity's skip_writes).
        if self.recovery || self.failed.load(Ordering::Acquire) {
            return;
        }
        if let Err(msg) = self.reread_superblock(s) {
            integrity_err!("{}", msg.to_str().unwrap_or("Error reading superblock"));
            self.failed.store(true, Ordering::Release);
            return;
        }
        // The journal a crash left in mode J, as dm-integrity: replayed on the first resume,
        // unless the bitmap is in force (the area is a bitmap then).
        if !self.journal_uptodate.load(Ordering::Acquire)
            && self.sb.lock().sb.flags & SB_FLAG_DIRTY_BITMAP == 0
        {
            if let Err(what) = self.replay_journal(s) {
                self.fail_device(what);
                return;
            }
        }
        self.jw.lock().wrote = false;
        let reset = self.reset_recalculate;
        let provided = self.geo.provided_data_sectors();
        let old_provided = self.old_provided.swap(provided, Ordering::AcqRel);
        // The bitmap, as dm-integrity's resume: a dirty one is read and its regions are
        // recalculated; in B mode a clean one is put in force (reset applied there too).
        {
            let mut g = self.bm.lock();
            let was_in_force = self.sb.lock().sb.flags & SB_FLAG_DIRTY_BITMAP != 0;
            let needs_read = bitmap::needs_read(&self.sb.lock().sb, self.bitmap_mode);
            if needs_read && self.read_bitmap(s, &mut g).is_err() {
                self.fail_device("error reading bitmap");
                return;
            }
            let BitmapState { disk, may_write, recalc: rc, .. } = &mut *g;
            let (rc, mw): (&mut [u8], &mut [u8]) = if self.bitmap_mode {
                (rc, may_write)
            } else {
                (&mut [], &mut [])
            };
            let r = {
                let mut sbg = self.sb.lock();
                bitmap::on_resume(&mut sbg.sb, self.bitmap_mode, &self.bits, reset, old_provided, provided, disk, rc, mw)
            };
            // A bitmap newly put in force: first the superblock that says so, then the bitmap
            // over the empty journal, as dm-integrity (the other order, cut by a crash, leaves
            // a journal whose first entries the zeroed bitmap made "in use", which the kernel
            // would replay over data).
            if r.write_bitmap
                && !was_in_force
                && self.sb.lock().sb.flags & SB_FLAG_DIRTY_BITMAP != 0
            {
                drop(g);
                self.sb.lock().dirty = true;
                if self.write_superblock(s, true).is_err() {
                    self.fail_device("error writing superblock");
                    return;
                }
                g = self.bm.lock();
            }
            if r.write_bitmap && self.write_bitmap(s, &mut g).is_err() {
                // `may_write` says bits are on disk that are not.
                self.fail_device("error writing bitmap");
                return;
            }
            drop(g);
            if r.write_empty_journal && self.write_empty_journal(s).is_err() {
                // The bitmap stays in force: dm-integrity fails a device whose journal is
                // neither a journal nor under the flag.
                self.sb.lock().sb.flags |= SB_FLAG_DIRTY_BITMAP;
                self.fail_device("error writing journal");
                return;
            }
            if r.write_empty_journal {
                // As dm-integrity's replay of the empty journal it wrote: mode J starts at
                // section 0 with sequence 1.
                let mut w = self.jw.lock();
                w.cursor = journal::Cursor { section: 0, seq: 1 };
                w.unflushed = 0;
            }
            self.sb.lock().dirty |= r.write_superblock;
        }
        let start = {
            let mut g = self.sb.lock();
            let r = recalc::on_resume(&mut g.sb, provided, false);
            g.dirty |= r.write_superblock;
            r.start_worker
        };
        if self.write_superblock(s, false).is_err() {
            self.fail_device("error writing superblock");
            return;
        }
        self.stop.store(false, Ordering::Release);
        if start {
            self.start_worker(ti);
        }
    }

    fn message(
        &self,
        ti: &Ti<Self>,
        args: &mut Args<'_>,
        _out: &mut StatusWriter<'_>,
        _s: &MaySleep<'_>,
    ) -> Result {
        let msg = recalc::Message::parse(args).map_err(|e| {
            integrity_err!("{}", e.0.to_str().unwrap_or("Invalid message"));
            EINVAL
        })?;
        let wake = self.recalc_ctl.lock().control.apply(msg, self.now_ns());
        if wake {
            self.start_worker(ti);
        }
        Ok(())
    }

    fn status(&self, _ti: &Ti<Self>, kind: StatusType, out: &mut StatusWriter<'_>) {
        let Ok(slices) = self.line.slices() else {
            return;
        };
        let mut args = Args::new(&slices);
        let Ok(t) = IntegrityTable::parse(&mut args, bindings::DM_RUST_HZ) else {
            return;
        };
        let sb = self.sb.lock().sb;
        let state = State {
            dev_name: self.dev.name(),
            meta_dev_name: None,
            superblock: &sb,
            tag_size: self.tag_size as u32,
            provided_data_sectors: self.geo.provided_data_sectors(),
            mismatches: self.mismatches.load(Ordering::Relaxed),
            log2_buffer_sectors: self.geo.params().log2_buffer_sectors,
            initial_sectors: self.geo.initial_sectors(),
            journal_entries: u32::try_from(self.geo.journal_entries()).unwrap_or(u32::MAX),
            log2_blocks_per_bitmap_bit: self.bits.log2_blocks_per_bit,
            hz: bindings::DM_RUST_HZ,
        };
        let _ = match kind {
            StatusType::Info => t.write_info(out, &state),
            StatusType::Table => t.write_table(out, &state),
            StatusType::Ima => t.write_ima(out, &state),
        };
    }

    fn iterate_devices(&self, visit: &mut DeviceVisitor<'_>) -> c_int {
        // As dm-integrity: the data of the first area, for the target's length.
        let first = self.geo.params().start
            + u64::from(self.geo.initial_sectors())
            + u64::from(self.geo.metadata_run());
        visit.visit(&self.dev, first, self.len)
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        if self.spb > 1 {
            limits.set_block_size(self.block_bytes());
        }
        // As dm-integrity: without an internal hash the layer above supplies a tag per block.
        if self.tfm.is_none() {
            // The constructor refused tags over `MAX_TAG_SIZE` (255) bytes.
            limits.set_integrity(self.tag_size as u8, self.block_shift() as u8);
        }
        limits.set_max_integrity_segments_unlimited();
        // As dm-integrity: discards in whole blocks.
        limits.set_discard_granularity(self.block_bytes());
    }
}

crate::declare_target!(Integrity, integrity);
