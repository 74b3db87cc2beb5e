// SPDX-License-Identifier: GPL-2.0

//! `verity-rs` (`verity` with `upstream_names=1`): a read-only device whose every data block is
//! checked against a Merkle tree of hashes before a read completes, compatible with the kernel's
//! dm-verity (table line, on-disk format, status) so that veritysetup drives it.
//!
//! The table line and the tree's geometry are parsed and computed by the pure modules [`table`]
//! and [`tree`] (tested on the host). This module does the I/O: reads complete in process context
//! (`io_done`), where each data block is hashed and compared with its digest in the tree; hash
//! blocks come from dm-bufio, are verified once up to the root, and are trusted while cached.
//! In `preresume` the root digest and signature state go to the LSMs (IPE).

// Targets are safe Rust: all unsafe code lives in the abstraction (`rust/dm/`).
#![deny(unsafe_code)]

pub mod table;
// The tree builder and the superblock parser serve the host tests and tools, not the module.
#[allow(dead_code)]
pub mod tree;

use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use kernel::ffi::c_int;
use kernel::prelude::*;

use crate::bindings;
use crate::dm::bio::Op;
use crate::dm::saved_args::SavedArgs;
use crate::dm::bitmap::AtomicBitmap;
use crate::dm::bufio::BufioClient;
use crate::dm::context::MaySleep;
use crate::dm::device::QueueLimits;
use crate::dm::hash::{Desc, Shash};
use crate::dm::io::{BlockError, DoneIo, IoBlock};
use crate::dm::work::{self, Defer, WorkqueueConfig};
use crate::dm::{
    keys, system, Args, Bio, CtrError, Device, DeviceVisitor, MapResult, StatusType, StatusWriter,
    Target, TargetCtx, Ti,
};
use table::{CorruptionMode, IoErrorMode, VerityTable, MAX_DIGEST_SIZE};
use tree::{Digest, Geometry, HashError};

/// Logs an error the way dm-verity's messages read (`device-mapper: verity: ...`), so that what
/// users grep for finds ours too.
macro_rules! verity_err {
    ($($arg:tt)*) => {
        pr_err!("device-mapper: verity: {}\n", format_args!($($arg)*))
    };
}

/// Corruptions counted (and reported) per target at most (as dm-verity).
const MAX_CORRUPTED_ERRS: u32 = 100;

/// Bytes of hash blocks read ahead around a read's hashes at the lowest tree level.
const PREFETCH_BYTES: u32 = 262144;

fn nomem<E>(_: E) -> CtrError {
    CtrError::new(ENOMEM, c"Cannot allocate verity structure")
}

/// Parses the saved table line again (it was accepted by the constructor, so it parses).
fn saved_table<'a>(slices: &'a [&'a [u8]]) -> Option<VerityTable<'a>> {
    let mut args = Args::new(slices);
    VerityTable::parse(&mut args, bindings::DM_RUST_PAGE_SIZE as u32).ok()
}

/// The kind of a corrupted block, as dm-verity numbers it in its uevent.
#[derive(Clone, Copy)]
enum BlockKind {
    Data = 0,
    Metadata = 1,
}

impl BlockKind {
    fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Metadata => "metadata",
        }
    }
}

/// What went wrong verifying a read.
enum Failure {
    /// A digest did not match (already handled per the corruption mode).
    Mismatch,
    /// Reading a hash block or hashing failed.
    Io,
}

/// A verity target.
pub(crate) struct Verity {
    /// The hash device's blocks (owns the hash device).
    hashes: BufioClient,
    /// Data blocks read again from the data device, away from the bio's pages, when their digest
    /// did not match (forgotten before and after, so each read reaches the device).
    recheck: BufioClient,
    data_dev: Device,
    tfm: Shash,
    geo: Geometry,
    salt: KVec<u8>,
    root: [u8; MAX_DIGEST_SIZE],
    /// The digest of an all-zero data block, with `ignore_zero_blocks`.
    zero_digest: Option<[u8; MAX_DIGEST_SIZE]>,
    /// Data blocks verified once, with `check_at_most_once`.
    validated: Option<AtomicBitmap>,
    corruption_mode: CorruptionMode,
    io_error_mode: IoErrorMode,
    /// The root hash signature, checked at construction.
    sig: Option<KVec<u8>>,
    line: SavedArgs,
    /// Length of the target in sectors.
    len: u64,
    /// A mismatch was seen (status `C`).
    hash_failed: AtomicBool,
    /// Corruptions counted so far (at most `MAX_CORRUPTED_ERRS`), whether logged or not.
    corrupted_errs: AtomicU32,
}

/// Hashing through the kernel crypto API for the pure tree code.
struct KernelDigest<'a>(Desc<'a>, usize);

impl Digest for KernelDigest<'_> {
    fn size(&self) -> usize {
        self.1
    }
    fn reset(&mut self) -> Result<(), HashError> {
        self.0.init().map_err(|_| HashError)
    }
    fn update(&mut self, data: &[u8]) -> Result<(), HashError> {
        self.0.update(data).map_err(|_| HashError)
    }
    fn finish(&mut self, out: &mut [u8]) -> Result<(), HashError> {
        self.0.finup(&[], out).map_err(|_| HashError)
    }
}

impl Verity {
    fn digest_size(&self) -> usize {
        self.geo.digest_size()
    }

    fn hash(&self, data: &[u8], out: &mut [u8]) -> Result<(), Failure> {
        let mut d = KernelDigest(self.tfm.desc(), self.digest_size());
        tree::hash_block(&mut d, self.geo.version(), &self.salt, data, out).map_err(|_| Failure::Io)
    }

    /// Hashes a data block of a bio in place (salted as `tree::hash_block` does).
    fn hash_io(&self, block: &IoBlock<'_>, out: &mut [u8]) -> Result<(), Failure> {
        let mut d = self.tfm.desc();
        let r = d.init().and_then(|()| {
            if self.geo.version() == 0 {
                d.update_block(block)?;
                d.update(&self.salt)
            } else {
                d.update(&self.salt)?;
                d.update_block(block)
            }
        });
        r.and_then(|()| d.finup(&[], out)).map_err(|_| Failure::Io)
    }

    /// Records a mismatch in `kind` block `block` as dm-verity does: status `C` always; the
    /// first `MAX_CORRUPTED_ERRS` are counted, logged (rate-limited), and reported by a
    /// `KOBJ_CHANGE` uevent (`DM_VERITY_ERR_BLOCK_NR=<kind>,<block>`) and an audit record.
    /// Returns whether the I/O must fail.
    fn corruption(&self, cx: &Cx<'_, '_>, kind: BlockKind, block: u64) -> bool {
        let Cx { ti, io, s } = *cx;
        self.hash_failed.store(true, Ordering::Relaxed);
        let counted = self
            .corrupted_errs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_CORRUPTED_ERRS).then_some(n + 1)
            });
        if let Ok(n) = counted {
            let op = match kind {
                BlockKind::Data => c"verify-data",
                BlockKind::Metadata => c"verify-metadata",
            };
            io.audit(c"verity", op, block, 0);
            if system::log_ratelimited() {
                verity_err!(
                    "{}: {} block {} is corrupted",
                    self.data_dev.name(),
                    kind.name(),
                    block
                );
            }
            if n + 1 == MAX_CORRUPTED_ERRS {
                verity_err!("{}: reached maximum errors", self.data_dev.name());
                ti.audit_event(c"verity", c"max-corrupted-errors", 0);
            }
            let env = kernel::str::CString::try_from_fmt(fmt!(
                "DM_VERITY_ERR_BLOCK_NR={},{}",
                kind as u32,
                block
            ));
            if let Ok(env) = env {
                let _ = ti.uevent_change(&[&env], s);
            }
        }
        match self.corruption_mode {
            CorruptionMode::Logging => false,
            CorruptionMode::Restart => system::restart(c"dm-verity device corrupted"),
            CorruptionMode::Panic => system::panic(c"dm-verity device corrupted"),
            CorruptionMode::Eio => true,
        }
    }

    /// Finds the digest of data block `block` in the tree, verifying every hash block on the
    /// way up to the first one already verified (or the root).
    fn digest_of(&self, cx: &Cx<'_, '_>, block: u64, digest: &mut [u8]) -> Result<(), Failure> {
        let ds = self.digest_size();
        let levels = self.geo.levels();
        let pos = |level| self.geo.digest_position(block, level).ok_or(Failure::Io);
        if levels > 0 {
            let (hb, off) = pos(0)?;
            let buf = self.hashes.read(cx.s, hb).map_err(|_| Failure::Io)?;
            if buf.verified() {
                digest.copy_from_slice(&buf.data()[off..off + ds]);
                return Ok(());
            }
        }
        digest.copy_from_slice(&self.root[..ds]);
        for level in (0..levels).rev() {
            let (hb, off) = pos(level)?;
            let buf = self.hashes.read(cx.s, hb).map_err(|_| Failure::Io)?;
            if !buf.verified() {
                let mut real = [0u8; MAX_DIGEST_SIZE];
                self.hash(buf.data(), &mut real[..ds])?;
                if real[..ds] == digest[..] {
                    buf.set_verified();
                } else if self.corruption(cx, BlockKind::Metadata, hb) {
                    return Err(Failure::Mismatch);
                }
            }
            digest.copy_from_slice(&buf.data()[off..off + ds]);
        }
        Ok(())
    }

    fn verify_block(
        &self,
        cx: &Cx<'_, '_>,
        block: u64,
        data: &mut IoBlock<'_>,
    ) -> Result<(), Failure> {
        if self.validated.as_ref().is_some_and(|v| v.test(block)) {
            return Ok(());
        }
        let ds = self.digest_size();
        let mut want = [0u8; MAX_DIGEST_SIZE];
        self.digest_of(cx, block, &mut want[..ds])?;
        if self.zero_digest.is_some_and(|z| z[..ds] == want[..ds]) {
            data.zero();
            return Ok(());
        }
        let mut real = [0u8; MAX_DIGEST_SIZE];
        self.hash_io(data, &mut real[..ds])?;
        if real[..ds] == want[..ds] || self.recheck(cx.s, block, data, &want[..ds]) {
            if let Some(v) = &self.validated {
                v.set(block);
            }
            Ok(())
        } else if self.corruption(cx, BlockKind::Data, block) {
            Err(Failure::Mismatch)
        } else {
            Ok(())
        }
    }

    /// Reads data block `block` again from the data device into memory of our own and checks it
    /// there; if it matches `want`, copies it into `data` and returns true. A read buffer can be
    /// user memory that changes while we hash it (direct I/O): such a mismatch is not
    /// corruption. The block is dropped from the recheck cache before and after, so the read
    /// reaches the device.
    fn recheck(&self, s: &MaySleep<'_>, block: u64, data: &mut IoBlock<'_>, want: &[u8]) -> bool {
        self.recheck.forget(s, block);
        let Ok(buf) = self.recheck.read(s, block) else {
            return false;
        };
        let mut real = [0u8; MAX_DIGEST_SIZE];
        let ok =
            self.hash(buf.data(), &mut real[..want.len()]).is_ok() && real[..want.len()] == *want;
        if ok {
            data.copy_from(buf.data());
        }
        drop(buf);
        self.recheck.forget(s, block);
        ok
    }

    /// An I/O error (not a mismatch) on a read: apply `restart_on_error`/`panic_on_error`.
    fn io_error(&self, io: &DoneIo<'_>, status: u8) -> u8 {
        if !io.is_readahead() && !system::shutting_down() {
            match self.io_error_mode {
                IoErrorMode::Restart => system::restart(c"dm-verity device has I/O error"),
                IoErrorMode::Panic => system::panic(c"dm-verity device has I/O error"),
                IoErrorMode::Eio => {}
            }
        }
        status
    }
}

/// What the checks of one read need: the target, the bio (for audit records) and the right to
/// sleep.
#[derive(Clone, Copy)]
struct Cx<'a, 'b> {
    ti: &'a Ti<Verity>,
    io: &'a DoneIo<'b>,
    s: &'a MaySleep<'a>,
}

/// A range of data blocks whose hash blocks to read ahead.
pub(crate) struct Prefetch {
    block: u64,
    count: u64,
}

impl Defer for Verity {
    type Item = Prefetch;

    /// Reads ahead the hash blocks a read will need, below the top level (always cached once
    /// read); at the lowest level a whole aligned cluster, which helps sequential reads.
    fn run_deferred(&self, _ti: &Ti<Self>, p: Prefetch, s: &MaySleep<'_>) {
        let levels = self.geo.levels();
        let last = p.block + p.count - 1;
        for level in (0..levels.saturating_sub(1)).rev() {
            let (Some((mut start, _)), Some((mut end, _))) = (
                self.geo.digest_position(p.block, level),
                self.geo.digest_position(last, level),
            ) else {
                return;
            };
            if level == 0 {
                let cluster = u64::from(PREFETCH_BYTES >> self.geo.data_block_size().trailing_zeros()).max(1);
                let cluster = 1u64 << cluster.ilog2();
                start &= !(cluster - 1);
                end = (end | (cluster - 1)).min(self.geo.hash_end() - 1);
            }
            self.hashes.prefetch(s, start, (end - start + 1) as u32);
        }
    }
}

#[vtable]
impl Target for Verity {
    const NAME: &'static CStr = c"verity-rs";
    const UPSTREAM_NAME: Option<&'static CStr> = Some(c"verity");
    // The version of the kernel's dm-verity whose features we have; veritysetup reads it.
    const VERSION: [u32; 3] = [1, 13, 0];
    // The LSMs rely on a verity table being the only target and never changing.
    const FEATURES: u64 = (bindings::DM_TARGET_SINGLETON | bindings::DM_TARGET_IMMUTABLE) as u64;
    /// Where `io_done` and prefetches run (as dm-verity's `kverityd`).
    const WORKQUEUE: Option<WorkqueueConfig> = Some(WorkqueueConfig {
        name: c"kverityd_rs",
        flags: work::flags::MEM_RECLAIM | work::flags::HIGHPRI | work::flags::PERCPU,
        max_active: work::MaxActive::Default,
    });
    const AUDIT_PREFIX: Option<&'static CStr> = Some(c"verity");

    fn new(ctx: &mut TargetCtx<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        if !ctx.read_only() {
            return Err(CtrError::new(EINVAL, c"Device must be readonly"));
        }
        let line = SavedArgs::new(args).map_err(nomem)?;
        let t = VerityTable::parse(args, bindings::DM_RUST_PAGE_SIZE as u32)?;

        let data_dev = ctx
            .get_device(t.data_dev())
            .map_err(|e| CtrError::new(e.errno, c"Data device lookup failed"))?;
        let hash_dev = ctx
            .get_device(t.hash_dev())
            .map_err(|e| CtrError::new(e.errno, c"Hash device lookup failed"))?;
        if t.data_block_size() < data_dev.logical_block_size() {
            return Err(CtrError::new(EINVAL, c"Invalid data device block size"));
        }
        if t.hash_block_size() < hash_dev.logical_block_size() {
            return Err(CtrError::new(EINVAL, c"Invalid hash device block size"));
        }
        if ctx.len() > t.data_sectors() {
            return Err(CtrError::new(EINVAL, c"Data device is too small"));
        }

        let tfm = Shash::new(t.algorithm())
            .map_err(|e| CtrError::new(e, c"Cannot initialize hash function"))?;
        t.check_digest_size(tfm.digest_size())?;
        let mut root = [0u8; MAX_DIGEST_SIZE];
        root[..tfm.digest_size()].copy_from_slice(t.root_digest());

        let sig = match t.root_hash_sig_key_desc() {
            Some(desc) => {
                let sig = keys::user_key_payload(desc.as_bytes()).map_err(|e| {
                    CtrError::new(e, c"DM Verity Sig Verification Invalid key specified")
                })?;
                // The signature covers the root digest as written on the table line (hex).
                let slices = line.slices().map_err(nomem)?;
                let hex = slices.get(8).copied().unwrap_or_default();
                keys::verify_pkcs7(hex, &sig)
                    .map_err(|e| CtrError::new(e, c"Root hash verification failed"))?;
                Some(sig)
            }
            // dm-verity's `require_signatures`: an unsigned root hash is refused.
            None if crate::require_signatures() => {
                return Err(CtrError::new(ENOKEY, c"Root hash verification failed"));
            }
            None => None,
        };

        let geo = Geometry::new(
            t.version(),
            t.data_block_size(),
            t.hash_block_size(),
            t.data_blocks(),
            t.hash_start(),
            tfm.digest_size(),
        )
        .map_err(|e| CtrError::new(E2BIG, e.message()))?;

        let hashes = BufioClient::new(hash_dev, t.hash_block_size(), 1)
            .map_err(|e| CtrError::new(e, c"Cannot initialize dm-bufio"))?;
        let recheck = BufioClient::new(data_dev.try_clone(), t.data_block_size(), 1)
            .map_err(|e| CtrError::new(e, c"Cannot initialize dm-bufio"))?;
        if hashes.device_blocks() < geo.hash_end() {
            return Err(CtrError::new(E2BIG, c"Hash device is too small"));
        }

        let mut salt = KVec::new();
        salt.extend_from_slice(t.salt(), GFP_KERNEL)
            .map_err(nomem)?;

        let validated = if t.check_at_most_once() {
            Some(AtomicBitmap::new(t.data_blocks()).map_err(|e| {
                CtrError::new(e, c"failed to allocate bitset for check_at_most_once")
            })?)
        } else {
            None
        };

        let mut v = Self {
            hashes,
            recheck,
            data_dev,
            tfm,
            geo,
            salt,
            root,
            zero_digest: None,
            validated,
            corruption_mode: t.corruption_mode(),
            io_error_mode: t.io_error_mode(),
            sig,
            line,
            len: ctx.len(),
            hash_failed: AtomicBool::new(false),
            corrupted_errs: AtomicU32::new(0),
        };
        if t.ignore_zero_blocks() {
            let zeros = KVec::from_elem(0u8, v.geo.data_block_size() as usize, GFP_KERNEL)
                .map_err(nomem)?;
            let mut z = [0u8; MAX_DIGEST_SIZE];
            let ds = v.digest_size();
            v.hash(&zeros, &mut z[..ds])
                .map_err(|_| CtrError::new(EINVAL, c"Cannot hash the zero block"))?;
            v.zero_digest = Some(z);
        }
        KBox::pin(v, GFP_KERNEL).map_err(nomem)
    }

    fn map(&self, ti: &Ti<Self>, bio: &mut Bio) -> MapResult {
        // A verity table has this one target, from sector 0 (`SINGLETON`); it asks for no flush
        // or discard bios, so a bio without data has nothing to verify.
        let Some(sector) = bio.target_sector(ti) else {
            bio.set_dev(&self.data_dev);
            return MapResult::Remapped;
        };
        bio.remap(&self.data_dev, sector);
        // Shifts, not divisions: the block size is a power of two (checked in the table).
        let shift = self.geo.data_block_sector_shift();
        if (sector | bio.sectors()) & ((1 << shift) - 1) != 0 {
            if system::log_ratelimited() {
                verity_err!("unaligned io");
            }
            return MapResult::Kill;
        }
        let block = sector >> shift;
        let count = bio.sectors() >> shift;
        if block + count > self.geo.data_blocks() {
            if system::log_ratelimited() {
                verity_err!("io out of range");
            }
            return MapResult::Kill;
        }
        if bio.op() != Op::Read {
            return MapResult::Kill;
        }
        if count > 0 && !self.validated.as_ref().is_some_and(|v| v.test(block)) {
            // Best effort: without memory for it, the hash blocks are read when needed.
            let _ = ti.defer(Prefetch { block, count });
        }
        MapResult::RemappedCompleteInWork
    }

    fn io_done(&self, ti: &Ti<Self>, io: &mut DoneIo<'_>, s: &MaySleep<'_>) -> u8 {
        let status = io.lower_status();
        if status != bindings::DM_RUST_BLK_STS_OK {
            return self.io_error(io, status);
        }
        let first = io.sector() >> self.geo.data_block_sector_shift();
        let cx = Cx { ti, io, s };
        let r = io.for_each_block(self.geo.data_block_size(), |i, data| {
            self.verify_block(&cx, first + u64::from(i), data)
        });
        match r {
            Ok(()) => bindings::DM_RUST_BLK_STS_OK,
            Err(BlockError::Callback(Failure::Mismatch)) => bindings::DM_RUST_BLK_STS_IOERR,
            Err(BlockError::Unaligned) => {
                verity_err!("unaligned io (data block spans pages)");
                self.io_error(io, bindings::DM_RUST_BLK_STS_IOERR)
            }
            Err(BlockError::Callback(Failure::Io)) => {
                self.io_error(io, bindings::DM_RUST_BLK_STS_IOERR)
            }
        }
    }

    fn postsuspend(&self, _ti: &Ti<Self>, s: &MaySleep<'_>) {
        // The adapter drained our workqueue and no bio is in flight, so no buffer is held; should
        // one be, the cache is simply kept.
        let _ = self.hashes.reset(s);
    }

    fn preresume(&self, ti: &Ti<Self>, s: &MaySleep<'_>) -> Result {
        ti.set_verity_integrity(
            self.tfm.alg_name(),
            &self.root[..self.digest_size()],
            self.sig.as_deref(),
            s,
        )
    }

    fn status(&self, ti: &Ti<Self>, kind: StatusType, out: &mut StatusWriter<'_>) {
        let Ok(slices) = self.line.slices() else {
            return;
        };
        let Some(t) = saved_table(&slices) else {
            return;
        };
        let failed = self.hash_failed.load(Ordering::Relaxed);
        let (data, hash) = (self.data_dev.name(), self.hashes.device().name());
        let _ = match kind {
            StatusType::Info => t.write_info(out, failed),
            StatusType::Table => t.write_table(out, data, hash),
            StatusType::Ima => ti
                .write_ima_name_version(out)
                .and_then(|()| t.write_ima(out, data, hash, failed)),
        };
    }

    fn iterate_devices(&self, visit: &mut DeviceVisitor<'_>) -> c_int {
        visit.visit(&self.data_dev, 0, self.len)
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        limits.set_block_size(self.geo.data_block_size());
    }
}

crate::declare_target!(Verity, verity);
