// SPDX-License-Identifier: GPL-2.0

//! `integrity-rs` (`integrity` with `upstream_names=1`): a device whose every data block carries
//! a tag (a checksum of the block and its sector), stored beside the data in dm-integrity's
//! on-disk format, so that a device formatted by integritysetup opens here and in the kernel's
//! dm-integrity alike.
//!
//! This first slice implements mode `D` (direct: data and tags written in place, no journal)
//! with an internal hash (`crc32c`, `sha256`, any hash of the crypto API, keyed ones such as
//! `hmac(sha256)` with a hex key), `recalculate`, `allow_discards`, and mode `R` (recovery:
//! reads unchecked, writes refused, nothing written). The pure parts do the arithmetic: the table line ([`table`]), the superblock
//! ([`superblock`]), the layout ([`geometry`]) and the recalculation bookkeeping ([`recalc`]).
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
//!   (`0xf6` bytes) before it goes down; a block whose tag is all filler reads unchecked.
//!
//! What is not implemented is refused with a message naming it: modes `J`, `B`, mode `R`
//! without a superblock, `meta_device`, `journal_crypt`, `journal_mac`, tags for the layer
//! above (no `internal_hash`), `allow_discards_keyed`, and formatting a blank device.

// Targets are safe Rust: all unsafe code lives in the abstraction (`rust/dm/`).
#![deny(unsafe_code)]

// The pure modules serve the host tests and modes not implemented yet, too.
#[allow(dead_code)]
pub mod geometry;
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
use crate::dm::work::{flags, Defer, WorkqueueConfig};
use crate::dm::{
    system, Args, Bio, CtrError, Device, DeviceVisitor, MapResult, StatusType, StatusWriter,
    Target, TargetCtx, Ti,
};
use geometry::Geometry;
use superblock::{Probe, Superblock, TableView, MAX_DIGEST_SIZE, SB_FLAG_FIXED_HMAC, SB_SECTORS};
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

/// The recalculation worker, queued on the target's workqueue.
pub(crate) struct RecalcWork;

/// The recalculation's controls (`dmsetup message`) and whether a worker is queued or running.
struct RecalcCtl {
    control: recalc::Control,
    running: bool,
}

/// Longest sleep of a rate-limited worker before it looks at its stop flag again.
const MAX_RATE_SLEEP_NS: u64 = 100_000_000;

/// An integrity target (mode `D`, internal hash).
#[pin_data]
pub(crate) struct Integrity {
    /// The data device (which also holds the superblock and the tags).
    dev: Device,
    tfm: Shash,
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
    /// `reset_recalculate` not yet applied (on the first resume).
    reset_pending: AtomicBool,
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
    match t.mode() {
        Mode::Direct | Mode::Recovery => {}
        Mode::Journal => return e(c"Journal mode (J) is not implemented in integrity-rs"),
        Mode::Bitmap => return e(c"Bitmap mode (B) is not implemented in integrity-rs"),
    }
    if t.meta_device().is_some() {
        return e(c"meta_device is not implemented in integrity-rs");
    }
    if t.journal_crypt().is_some() {
        return e(c"journal_crypt is not implemented in integrity-rs");
    }
    if t.journal_mac().is_some() {
        return e(c"journal_mac is not implemented in integrity-rs");
    }
    if t.internal_hash().is_none() {
        return e(c"Tags from the layer above (no internal_hash) are not implemented in integrity-rs");
    }
    Ok(())
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
        let mut d = self.tfm.desc();
        d.init()?;
        if let Some(salt) = &self.salt {
            d.update(salt)?;
        }
        d.update(&sector.to_le_bytes())?;
        feed(&mut d)?;
        d.finup(&[], &mut digest)?;
        let n = self.tfm.digest_size().min(self.tag_size);
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
        while g.n == MAX_RANGES || g.overlaps(start, end) {
            self.range_freed.wait(&mut g);
        }
        let n = g.n;
        g.ranges[n] = (start, end);
        g.n += 1;
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
        sb.set_version(false, false);
        sb.write(area).ok_or(EINVAL)?;
        let len = area.len();
        self.dev.write_sync_fua(s, self.geo.params().start, area, len)?;
        *dirty = false;
        Ok(())
    }

    /// Whether a read of `sectors` at logical `sector` is checked (not above the recalculation
    /// position).
    fn read_is_checked(&self, sector: u64, sectors: u64) -> bool {
        recalc::read_is_checked(&self.sb.lock().sb, sector, sectors)
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
        if ti.defer(RecalcWork).is_err() {
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
    type Item = RecalcWork;

    /// The recalculation worker: from `recalc_sector` to the end, one range at a time, each
    /// under the lock of its data range; the position goes to the superblock every
    /// checkpoint and when the worker stops (`presuspend`) or finishes.
    fn run_deferred(&self, _ti: &Ti<Self>, _w: RecalcWork, s: &MaySleep<'_>) {
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
            if checkpoints.before_range() && self.write_superblock(s, true).is_err() {
                integrity_err!("{}: error writing superblock", self.dev.name());
                return;
            }
            let Some(phys) = self.geo.data_sector(r.start) else {
                break;
            };
            self.lock_range(phys, r.sectors);
            let res = self.recalc_range(s, r, &mut buf);
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
    const WORKQUEUE: Option<WorkqueueConfig> = Some(WorkqueueConfig {
        name: c"kintegrity-rs",
        flags: flags::MEM_RECLAIM | flags::PERCPU,
    });
    const MAP_WORKQUEUE: Option<WorkqueueConfig> = Some(WorkqueueConfig {
        name: c"kintegrity-rs-map",
        flags: flags::MEM_RECLAIM | flags::PERCPU,
    });
    const AUDIT_PREFIX: Option<&'static CStr> = Some(c"integrity");

    fn new(ctx: &mut TargetCtx<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        let line = SavedArgs::new(args).map_err(nomem)?;
        let t = IntegrityTable::parse(args, bindings::DM_RUST_HZ)?;
        refuse_unimplemented(&t)?;
        let dev = ctx.get_device(t.dev())?;
        let spec = t.internal_hash();
        let alg = spec.map(|a| a.alg()).unwrap_or_default();
        let mut tfm = Shash::new(alg).map_err(|e| CtrError::new(e, c"Invalid internal hash"))?;
        set_internal_hash_key(&mut tfm, spec)?;
        let tag_size = t.check(Some(tfm.digest_size() as u32))?;
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
        let mut sb = match superblock::probe(&area) {
            Ok(Probe::Superblock(sb)) => sb,
            Ok(Probe::Blank) if t.mode() == Mode::Recovery => return Err(recovery_without_superblock()),
            Ok(Probe::Blank) => {
                return Err(CtrError::new(
                    EOPNOTSUPP,
                    c"The device is not initialized (formatting is not implemented in integrity-rs)",
                ))
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
        if sb.provided_data_sectors != geo.provided_data_sectors() {
            sb.provided_data_sectors = geo.provided_data_sectors();
            dirty = true;
        }
        let flags_before = sb.flags;
        t.apply_recalculate(&mut sb, geo.provided_data_sectors())?;
        dirty |= sb.flags != flags_before;

        let buffer_bytes = 512u32 << params.log2_buffer_sectors;
        let mut client = BufioClient::new(dev.try_clone(), buffer_bytes, 1)
            .map_err(|e| CtrError::new(e, c"Cannot initialize dm-bufio"))?;
        client.set_sector_offset(start + u64::from(geo.initial_sectors()));

        // Bios never cross an interleave area: their data and tags are each contiguous.
        ctx.set_max_io_len(1u32 << params.log2_interleave_sectors)?;
        ctx.set_num_flush_bios(1);
        if t.allow_discards() {
            ctx.set_num_discard_bios(1);
        }

        let salt = sb.has(SB_FLAG_FIXED_HMAC).then_some(sb.salt);
        let state = pin_init!(Self {
            dev,
            tfm,
            geo,
            tag_size: tag_size as usize,
            spb: 1u32 << t.log2_sectors_per_block(),
            salt,
            discards: t.allow_discards(),
            recovery: t.mode() == Mode::Recovery,
            meta <- new_mutex!(client),
            sb <- new_mutex!(SbState { sb, area, dirty }),
            ranges <- new_mutex!(RangeSet { ranges: [(0, 0); MAX_RANGES], n: 0 }),
            range_freed <- new_condvar!(),
            mismatches: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            reset_pending: AtomicBool::new(t.reset_recalculate()),
            recalc_ctl <- new_mutex!(RecalcCtl { control: recalc::Control::new(0), running: false }),
            epoch: Instant::<Monotonic>::now(),
            line,
            len: ctx.len(),
        });
        KBox::pin_init(state, GFP_KERNEL).map_err(nomem)
    }

    fn map(&self, ti: &Ti<Self>, bio: &mut Bio) -> MapResult {
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
                Ok(()) => Deferred::Complete(bindings::DM_RUST_BLK_STS_OK),
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
        if bio.op() == Op::Discard {
            // The filler tags first (as dm-integrity, into the tag cache), then the discard goes
            // down; a read of those blocks then returns what the device gives, unchecked.
            if self.fill_discarded(s, sector, sectors >> self.spb.trailing_zeros()).is_err() {
                integrity_err!("{}: error writing tags", self.dev.name());
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
                    if !self.recovery && self.read_is_checked(sector, sectors) {
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
        // The worker has stopped (the adapter drained the workqueue) and written its position;
        // what is left in the tag cache goes to disk now: no metadata I/O after this.
        if self.flush_tags(s).is_err() {
            integrity_err!("{}: error writing tags", self.dev.name());
        }
    }

    fn resume(&self, ti: &Ti<Self>, s: &MaySleep<'_>) {
        // Mode R writes nothing: no superblock, no recalculation (dm-integrity's skip_writes).
        if self.recovery {
            return;
        }
        let reset = self.reset_pending.swap(false, Ordering::AcqRel);
        let start = {
            let mut g = self.sb.lock();
            let r = recalc::on_resume(&mut g.sb, self.geo.provided_data_sectors(), reset);
            g.dirty |= r.write_superblock || reset;
            r.start_worker
        };
        if self.write_superblock(s, false).is_err() {
            integrity_err!("{}: error writing superblock", self.dev.name());
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
            log2_blocks_per_bitmap_bit: 0,
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
        // As dm-integrity: discards in whole blocks.
        limits.set_discard_granularity(self.block_bytes());
    }
}

crate::declare_target!(Integrity, integrity);
