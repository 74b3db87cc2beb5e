// SPDX-License-Identifier: GPL-2.0

//! Targets: the [`Target`] trait, the C callbacks that forward to it, and registration.

use core::fmt::Write;
use core::marker::PhantomData;
use core::pin::Pin;

use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::prelude::*;

use super::args::{ArgError, Args};
use super::bio::{Bio, Op};
use super::blk_crypto::Keys;
use super::clone::ClonePools;
use super::context::MaySleep;
use super::device::{Device, DeviceVisitor, QueueLimits};
use super::io::{self, Deferred, DoneIo};
use super::status::{StatusType, StatusWriter};
use super::work::{Workqueue, WorkqueueConfig};
use crate::bindings;

/// Why a constructor failed: the errno returned to device-mapper and the message it reports
/// (`ti->error`), which device-mapper prints with the table line that was refused.
#[derive(Clone, Copy, Debug)]
pub struct CtrError {
    /// Returned to device-mapper.
    pub errno: Error,
    /// Shown to the user.
    pub msg: &'static CStr,
}

impl CtrError {
    /// An error with its message.
    pub fn new(errno: Error, msg: &'static CStr) -> Self {
        Self { errno, msg }
    }
}

impl From<ArgError> for CtrError {
    fn from(e: ArgError) -> Self {
        Self::new(EINVAL, e.0)
    }
}

/// What `map` did with a bio.
///
/// A target cannot take a bio over to complete it later itself: it returns
/// [`MapResult::RemappedCompleteInWork`], whose completion the abstraction owns, so no bio can be
/// left without one. Only the abstraction hands bios to kernel code that completes them
/// ([`MapResult::Encrypt`]), after the target's `map` has returned.
pub enum MapResult {
    /// The bio was remapped; device-mapper submits it.
    Remapped,
    /// Fail the bio with an I/O error.
    Kill,
    /// Ask device-mapper to requeue the bio (after a suspend, for instance).
    Requeue,
    /// The bio was remapped; device-mapper submits it, and once the lower device has finished
    /// it, [`Target::io_done`] runs in process context on the target's workqueue before the bio
    /// completes. Only for targets that implement `io_done` (else it is treated as `Remapped`).
    RemappedCompleteInWork,
    /// Hand the bio to the device below with an encryption context (inline encryption): the
    /// abstraction does it after `map` returns (see [`Encrypt`](super::blk_crypto::Encrypt)),
    /// so the target never holds a bio that blk-crypto's fallback has taken over.
    Encrypt(super::blk_crypto::Encrypt),
    /// The target takes the bio over: device-mapper is told it was submitted, and
    /// [`Target::bio_work`] runs in process context on the target's workqueue, after which the
    /// bio completes with the status `bio_work` returns. The abstraction owns the completion, so
    /// it always happens. Only for targets that implement `bio_work` (else the bio fails).
    CompleteInWork,
    /// Hand the bio to process context: [`Target::map_deferred`] runs on the target's map
    /// workqueue ([`Target::MAP_WORKQUEUE`]), where it may sleep (take locks that wait, read and
    /// write metadata), and decides there; the abstraction then submits or completes the bio.
    /// Only for targets that implement `map_deferred` (else the bio fails).
    Defer,
    /// Take only the first `n` sectors of the bio (`dm_accept_partial_bio`: device-mapper sends
    /// the rest to `map` again as another bio) and hand them to process context as
    /// [`MapResult::Defer`]. The bio fails if `n` is 0 or not less than its size, or if it is
    /// not one that device-mapper lets a target shorten safely (here: reads, and discards and
    /// secure erases of which a target asked one copy).
    DeferFirst(u32),
}

/// Whether `dm_accept_partial_bio` may shorten `bio` in `map` without hitting one of its
/// BUG_ONs: a read, or a discard or secure erase of which the target asked one copy
/// (device-mapper marks further copies as duplicates). Writes and write-zeroes are left out
/// (atomic writes, and both on zoned devices, must not be shortened), as are flushes and zone
/// operations.
fn may_shorten<T: Target>(ti: &Ti<T>, bio: &Bio) -> bool {
    // SAFETY: the target is constructed; these fields are set by the constructor only.
    let t = unsafe { &*ti.as_raw() };
    match bio.op() {
        Op::Read => true,
        Op::Discard => t.num_discard_bios == 1,
        Op::SecureErase => t.num_secure_erase_bios == 1,
        Op::Write | Op::WriteZeroes | Op::Flush | Op::Other => false,
    }
}

/// What `end_io` wants device-mapper to do with a completed bio.
pub enum EndIo {
    /// Complete it with the (possibly changed) status.
    Done,
    /// Requeue it.
    Requeue,
}

/// A device-mapper target.
///
/// Its state is created by [`Target::new`] from the table line (the constructor) and dropped
/// when device-mapper destroys the target (the destructor). `map` runs concurrently on many CPUs,
/// hence `Sync`. Callbacks a target does not implement are not registered with device-mapper at
/// all (the `#[vtable]` attribute records which ones a target implements).
///
/// What the abstraction owns, so that a target cannot get it wrong (see `Documentation/design.md`,
/// "Ownership"): the underlying devices opened with [`TargetCtx::get_device`] are released by the
/// adapter after the state is dropped; the workqueue of [`Target::WORKQUEUE`] is created by the
/// adapter and drained before the state is dropped (and before `postsuspend`); bio completions
/// deferred with [`MapResult::RemappedCompleteInWork`] are always completed.
#[vtable]
pub trait Target: Sized + Send + Sync {
    /// Name registered by default (coexists with the kernel's C targets).
    const NAME: &'static CStr;
    /// Name registered instead when the module is loaded with `upstream_names=1`, for the targets
    /// that replace a kernel target of that name.
    const UPSTREAM_NAME: Option<&'static CStr> = None;
    /// Version reported by `dmsetup targets`.
    const VERSION: [u32; 3];
    /// `DM_TARGET_*` feature flags.
    const FEATURES: u64 = 0;
    /// The target's own workqueue, for [`Target::io_done`] and deferred work
    /// ([`Defer`](super::work::Defer)); both require one (checked at compile time).
    const WORKQUEUE: Option<WorkqueueConfig> = None;
    /// The workqueue where [`Target::map_deferred`] runs, apart from [`Target::WORKQUEUE`] so
    /// that a bio waiting there (for a lock another bio holds until its `io_done`) never keeps
    /// that `io_done` from running.
    const MAP_WORKQUEUE: Option<WorkqueueConfig> = None;
    /// The prefix of the audit records the kernel's C target of the same job sends for table
    /// construction and destruction (`dm_audit_log_ctr`/`_dtr`), if it sends them.
    const AUDIT_PREFIX: Option<&'static CStr> = None;

    /// Builds the target from its table line.
    fn new(ctx: &mut TargetCtx<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError>;

    /// Maps one bio. Must not sleep.
    fn map(&self, ti: &Ti<Self>, bio: &mut Bio) -> MapResult;

    /// Maps, in process context, a bio that `map` returned as [`MapResult::Defer`]: may sleep.
    fn map_deferred(&self, _ti: &Ti<Self>, _bio: &mut Bio, _s: &MaySleep<'_>) -> Deferred {
        Deferred::Complete(bindings::DM_RUST_BLK_STS_IOERR)
    }

    /// Sees a bio the target remapped complete (any context, must not sleep); `status` may be
    /// changed.
    fn end_io(&self, _ti: &Ti<Self>, _bio: &mut Bio, _status: &mut u8) -> EndIo {
        EndIo::Done
    }

    /// Finishes, in process context, a bio that `map` returned as
    /// [`MapResult::RemappedCompleteInWork`]; returns the status the bio completes with.
    fn io_done(&self, _ti: &Ti<Self>, io: &mut DoneIo<'_>, _s: &MaySleep<'_>) -> u8 {
        io.lower_status()
    }

    /// Finishes, in process context, a bio that `map` took over with
    /// [`MapResult::CompleteInWork`]; returns the status the bio completes with.
    fn bio_work(&self, _ti: &Ti<Self>, _io: &mut io::TakenIo<'_>, _s: &MaySleep<'_>) -> u8 {
        bindings::DM_RUST_BLK_STS_IOERR
    }

    /// Before the device suspends.
    fn presuspend(&self, _ti: &Ti<Self>, _s: &MaySleep<'_>) {}

    /// After the device suspended: no bio is in flight in this target and the target's workqueue
    /// is idle.
    fn postsuspend(&self, _ti: &Ti<Self>, _s: &MaySleep<'_>) {}

    /// Before the device resumes with this table; an error keeps the device suspended.
    fn preresume(&self, _ti: &Ti<Self>, _s: &MaySleep<'_>) -> Result {
        Ok(())
    }

    /// After the device resumed.
    fn resume(&self, _ti: &Ti<Self>, _s: &MaySleep<'_>) {}

    /// Writes the status (`dmsetup status`), the table line (`dmsetup table`) or the IMA record.
    fn status(&self, _ti: &Ti<Self>, _kind: StatusType, _out: &mut StatusWriter<'_>) {}

    /// Handles `dmsetup message`; may write a reply into `out`.
    fn message(
        &self,
        _ti: &Ti<Self>,
        _args: &mut Args<'_>,
        _out: &mut StatusWriter<'_>,
        _s: &MaySleep<'_>,
    ) -> Result {
        Err(EINVAL)
    }

    /// Calls `visit` for each underlying device and the area of it that the target uses.
    fn iterate_devices(&self, _visit: &mut DeviceVisitor<'_>) -> c_int {
        0
    }

    /// Adjusts the queue limits of the mapped device.
    fn io_hints(&self, _limits: &mut QueueLimits<'_>) {}
}

/// What the adapter keeps for a constructed target in `ti->private`.
///
/// Field order is release order on the destructor path, done by hand in [`Adapter::dtr`]: the
/// workqueue is drained first (nothing deferred still refers to the state), then the state is
/// dropped (and with it the target's [`Device`] handles), then the blk-crypto keys are evicted
/// and wiped (no bio uses them any more), then the underlying devices are put.
pub(crate) struct Holder<T: Target> {
    pub(crate) wq: Option<Workqueue>,
    pub(crate) map_wq: Option<Workqueue>,
    pub(crate) target: Pin<KBox<T>>,
    /// The pools of the target's write clones, if it asked for them.
    pub(crate) clones: Option<ClonePools>,
    pub(crate) keys: Keys,
    devices: KVec<*mut bindings::dm_dev>,
}

/// A constructed target of type `T` (`struct dm_target`), as its callbacks see it.
///
/// Only the adapter makes one (`Ti::from_raw`), for a target of type `T` between a successful
/// constructor and the destructor, and lends it for the duration of one callback.
#[repr(transparent)]
pub struct Ti<T>(kernel::types::Opaque<bindings::dm_target>, PhantomData<T>);

impl<T: Target> Ti<T> {
    /// # Safety
    ///
    /// `ptr` must point to a live `struct dm_target` whose constructor `Adapter::<T>::ctr`
    /// succeeded and whose destructor has not run yet, for the lifetime `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::dm_target) -> &'a Self {
        // SAFETY: `Ti` is a transparent wrapper of `dm_target` (`PhantomData` is zero-sized);
        // the caller guarantees liveness for `'a`.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::dm_target {
        self.0.get()
    }

    /// The adapter's data for this target.
    pub(crate) fn holder(&self) -> &Holder<T> {
        // SAFETY: `from_raw`'s contract: the constructor of type `T` succeeded, so `private`
        // holds the `Holder<T>` `Adapter::<T>::ctr` stored there, which only `dtr` frees.
        unsafe { &*(*self.as_raw()).private.cast::<Holder<T>>() }
    }

    /// First sector of the target in the mapped device.
    pub fn begin(&self) -> u64 {
        // SAFETY: device-mapper sets `begin` before the constructor and never changes it.
        unsafe { (*self.as_raw()).begin }
    }

    /// Length of the target in sectors.
    pub fn len(&self) -> u64 {
        // SAFETY: `from_raw`'s contract keeps the target live; device-mapper sets `len` before
        // the constructor and never changes it.
        unsafe { (*self.as_raw()).len }
    }

    /// The name the target type is registered under.
    pub fn type_name(&self) -> &str {
        // SAFETY: a constructed target's type is registered (`Registration`), with a static name
        // that stays until it is unregistered, after every target of it is gone.
        let name = unsafe { CStr::from_char_ptr((*(*self.as_raw()).type_).name) };
        name.to_str().unwrap_or("?")
    }

    /// Writes `target_name=<name>,target_version=<x.y.z>`, the start of every IMA record
    /// (`DMEMIT_TARGET_NAME_VERSION`).
    pub fn write_ima_name_version(&self, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        // SAFETY: the type is registered while a target of it exists (`Registration`), and
        // `Registration::new` set the version before registering.
        let [a, b, c] = unsafe { (*(*self.as_raw()).type_).version };
        write!(
            out,
            "target_name={},target_version={a}.{b}.{c}",
            self.type_name()
        )
    }

    /// The mapped device's block device (`/dev/dm-N`).
    fn mapped_bdev(&self) -> *mut bindings::block_device {
        // SAFETY: a constructed target belongs to a table and the table to a mapped device, both
        // alive while the target is (`from_raw`); `dm_disk` returns the device's gendisk.
        unsafe {
            let md = bindings::dm_table_get_md((*self.as_raw()).table);
            (*bindings::dm_disk(md)).part0
        }
    }

    /// Sends a `KOBJ_CHANGE` uevent for the mapped device with the environment `env`
    /// (`NAME=value` strings), as dm-verity does for corruption. May sleep.
    pub fn uevent_change(&self, env: &[&CStr], _s: &MaySleep<'_>) -> Result {
        const MAX: usize = 4;
        if env.len() >= MAX {
            return Err(EINVAL);
        }
        let mut envp = [core::ptr::null_mut::<c_char>(); MAX];
        for (p, e) in envp.iter_mut().zip(env) {
            *p = e.as_char_ptr().cast_mut();
        }
        // `envp` is NULL-terminated (`env.len() < MAX`); the uevent code only reads the strings.
        // SAFETY: the target is live (`from_raw`), hence its table and mapped device.
        kernel::error::to_result(unsafe {
            bindings::dm_rust_uevent_change(self.as_raw(), envp.as_mut_ptr())
        })
    }

    /// Sends a device-mapper audit event about the target (`dm_audit_log_target`).
    pub fn audit_event(&self, prefix: &CStr, op: &CStr, result: c_int) {
        // SAFETY: the target is live (`from_raw`); the strings are read during the call only.
        unsafe {
            bindings::dm_audit_log_ti(
                bindings::DM_RUST_AUDIT_DM_EVENT,
                prefix.as_char_ptr(),
                op.as_char_ptr(),
                self.as_raw(),
                result,
            )
        };
    }

    /// Tells the LSMs (IPE) the dm-verity properties of the mapped device: the root digest and
    /// its algorithm, and the root hash signature, or its absence, which is also a property.
    /// On failure the root digest is withdrawn again, so the device carries none.
    pub fn set_verity_integrity(
        &self,
        alg: &CStr,
        digest: &[u8],
        sig: Option<&[u8]>,
        _s: &MaySleep<'_>,
    ) -> Result {
        let bdev = self.mapped_bdev();
        let root = bindings::dm_verity_digest {
            alg: alg.as_char_ptr(),
            digest: digest.as_ptr(),
            digest_len: digest.len(),
        };
        // The LSMs copy what they keep of `root` during the call.
        // SAFETY: `bdev` is the live mapped device (`mapped_bdev`); `root` and what it points to
        // are valid for the call.
        kernel::error::to_result(unsafe {
            bindings::security_bdev_setintegrity(
                bdev,
                bindings::lsm_integrity_type_LSM_INT_DMVERITY_ROOTHASH,
                (&raw const root).cast(),
                core::mem::size_of_val(&root),
            )
        })?;
        let (sig_ptr, sig_len) = match sig {
            Some(s) => (s.as_ptr().cast(), s.len()),
            None => (core::ptr::null(), 0),
        };
        // SAFETY: `bdev` is the live mapped device (`mapped_bdev`); `sig_ptr` is NULL or points to
        // `sig_len` readable bytes; a NULL signature marks the device as unsigned.
        let r = kernel::error::to_result(unsafe {
            bindings::security_bdev_setintegrity(
                bdev,
                bindings::lsm_integrity_type_LSM_INT_DMVERITY_SIG_VALID,
                sig_ptr,
                sig_len,
            )
        });
        if r.is_err() {
            // SAFETY: `bdev` is the live mapped device (`mapped_bdev`); NULL withdraws the digest.
            unsafe {
                bindings::security_bdev_setintegrity(
                    bdev,
                    bindings::lsm_integrity_type_LSM_INT_DMVERITY_ROOTHASH,
                    core::ptr::null(),
                    0,
                )
            };
        }
        r
    }
}

/// The target being constructed.
pub struct TargetCtx<'a> {
    ti: *mut bindings::dm_target,
    /// Devices opened so far; the adapter puts them (on failure) or keeps them in the holder.
    devices: KVec<*mut bindings::dm_dev>,
    /// blk-crypto keys started so far; dropped (evicted, wiped) on failure, or kept in the holder.
    keys: Keys,
    /// The constructor's choice of workqueue for this table, instead of [`Target::WORKQUEUE`].
    workqueue: Option<WorkqueueConfig>,
    /// The pools of the target's write clones, made by `make_clone_pools`; kept in the holder.
    clones: Option<ClonePools>,
    sleep: MaySleep<'a>,
    _p: PhantomData<&'a mut bindings::dm_target>,
}

impl<'a> TargetCtx<'a> {
    /// Process context: the constructor may sleep.
    pub fn may_sleep(&self) -> &MaySleep<'a> {
        &self.sleep
    }

    pub(super) fn keys_mut(&mut self) -> &mut Keys {
        &mut self.keys
    }

    /// First sector of the target in the mapped device.
    pub fn begin(&self) -> u64 {
        // SAFETY: `ti` is live for the constructor call (`Adapter::ctr`); `begin` is set.
        unsafe { (*self.ti).begin }
    }

    /// Length of the target in sectors.
    pub fn len(&self) -> u64 {
        // SAFETY: `ti` is live for the constructor call (`Adapter::ctr`); `len` is set.
        unsafe { (*self.ti).len }
    }

    /// Size in sectors of the mapped device the table is loaded into, as its live table makes it:
    /// 0 while it has none (a new device, before its first resume). Device-mapper sets it when it
    /// swaps a table in, and a table has at least one target of at least one sector.
    pub fn mapped_device_sectors(&self) -> u64 {
        // SAFETY: `ti` is live for the constructor call and belongs to the table being loaded,
        // which belongs to a mapped device that outlives the load; `dm_disk` returns the device's
        // gendisk, whose `part0` lives as long as it.
        unsafe {
            let md = bindings::dm_table_get_md((*self.ti).table);
            bindings::dm_rust_bdev_nr_sectors((*bindings::dm_disk(md)).part0)
        }
    }

    fn mode(&self) -> bindings::blk_mode_t {
        // SAFETY: `ti` is live for the constructor call and belongs to the table being loaded.
        unsafe { bindings::dm_table_get_mode((*self.ti).table) }
    }

    /// Opens `path` (a device path or `major:minor`) with the table's mode. The adapter releases
    /// the device (`dm_put_device`) after the target's state is dropped; the returned [`Device`]
    /// holds its own reference to the block device, so it stays valid wherever it is kept.
    pub fn get_device(&mut self, path: &[u8]) -> Result<Device, CtrError> {
        let lookup = |e| CtrError::new(e, c"Device lookup failed");
        self.devices
            .reserve(1, GFP_KERNEL)
            .map_err(|_| lookup(ENOMEM))?;
        let mut cpath =
            KVec::with_capacity(path.len() + 1, GFP_KERNEL).map_err(|_| lookup(ENOMEM))?;
        cpath
            .extend_from_slice(path, GFP_KERNEL)
            .map_err(|_| lookup(ENOMEM))?;
        cpath.push(0, GFP_KERNEL).map_err(|_| lookup(ENOMEM))?;
        let mut dev = core::ptr::null_mut();
        // SAFETY: `ti` is a target under construction (`Adapter::ctr`); `cpath` is NUL-terminated.
        let r = unsafe {
            bindings::dm_get_device(self.ti, cpath.as_ptr().cast(), self.mode(), &mut dev)
        };
        if r != 0 {
            return Err(lookup(Error::from_errno(r)));
        }
        // Cannot fail: room was reserved above.
        let _ = self.devices.push(dev, GFP_KERNEL);
        // SAFETY: `dev` was just returned by `dm_get_device` and stays open until the adapter
        // puts it, after this call returns.
        Ok(unsafe { Device::from_dm_dev(dev) })
    }

    /// Whether the table is loaded read-only (`dmsetup --readonly`).
    pub fn read_only(&self) -> bool {
        self.mode() & !bindings::DM_RUST_BLK_OPEN_READ == 0
    }

    /// Makes this table's workqueue as `cfg` says instead of as [`Target::WORKQUEUE`] declares
    /// (a table option choosing per-CPU or unbound work, say). Only for a target that declares
    /// a `WORKQUEUE` (the one that `io_done`, `bio_work` and deferred work run on); ignored
    /// otherwise. The adapter makes the queue once the constructor has returned, and fails the
    /// table if `cfg`'s flags are not accepted ([`WorkqueueConfig::is_valid`]).
    pub fn set_workqueue(&mut self, cfg: WorkqueueConfig) {
        self.workqueue = Some(cfg);
    }

    /// Makes the pools of the target's write clones
    /// ([`TakenIo::write_clone`](super::io::TakenIo::write_clone)), keeping `pages` pages and
    /// `bios` bios in reserve. The adapter owns them and drops them after the target's state,
    /// once no bio of the target is in flight.
    pub fn make_clone_pools(&mut self, pages: i32, bios: u32) -> Result<(), CtrError> {
        let pools = ClonePools::new(pages, bios)
            .map_err(|e| CtrError::new(e, c"Cannot allocate clone pools"))?;
        self.clones = Some(pools);
        Ok(())
    }

    /// Number of empty flush bios device-mapper sends to `map` for each flush.
    pub fn set_num_flush_bios(&mut self, n: u32) {
        // SAFETY: the constructor has exclusive access to `ti` (`Adapter::ctr`).
        unsafe { (*self.ti).num_flush_bios = n };
    }

    /// Lets device-mapper send flushes straight to the underlying devices, without `map`, when
    /// every target of the table allows it. Only for targets that pass flushes on unchanged.
    pub fn set_flush_bypasses_map(&mut self, on: bool) {
        // SAFETY: the constructor has exclusive access to `ti` (`Adapter::ctr` lends the
        // `TargetCtx` for the constructor call only).
        unsafe { (*self.ti).set_flush_bypasses_map(on.into()) };
    }

    /// Limits the number of swap bios in flight in the target (`limit_swap_bios`), for targets
    /// that allocate memory to process a write: swapping out under memory pressure then cannot
    /// exhaust their pools.
    pub fn set_limit_swap_bios(&mut self, on: bool) {
        // SAFETY: the constructor has exclusive access to `ti` (`Adapter::ctr` lends the
        // `TargetCtx` for the constructor call only).
        unsafe { (*self.ti).set_limit_swap_bios(on.into()) };
    }

    /// Splits bios so that none crosses a multiple of `sectors` (from the target's start).
    pub fn set_max_io_len(&mut self, sectors: u32) -> Result<(), CtrError> {
        // SAFETY: the constructor has exclusive access to `ti` (`Adapter::ctr` lends the
        // `TargetCtx` for the constructor call only).
        let r = unsafe { bindings::dm_set_target_max_io_len(self.ti, sectors.into()) };
        if r != 0 {
            return Err(CtrError::new(Error::from_errno(r), c"Invalid max_io_len"));
        }
        Ok(())
    }

    /// Number of bios device-mapper sends to `map` for each discard (0 disables discards).
    pub fn set_num_discard_bios(&mut self, n: u32) {
        // SAFETY: the constructor has exclusive access to `ti` (`Adapter::ctr` lends the
        // `TargetCtx` for the constructor call only).
        unsafe { (*self.ti).num_discard_bios = n };
    }

    /// Number of bios device-mapper sends to `map` for each secure erase.
    pub fn set_num_secure_erase_bios(&mut self, n: u32) {
        // SAFETY: the constructor has exclusive access to `ti` (`Adapter::ctr` lends the
        // `TargetCtx` for the constructor call only).
        unsafe { (*self.ti).num_secure_erase_bios = n };
    }

    /// Number of bios device-mapper sends to `map` for each write-zeroes request.
    pub fn set_num_write_zeroes_bios(&mut self, n: u32) {
        // SAFETY: the constructor has exclusive access to `ti` (`Adapter::ctr` lends the
        // `TargetCtx` for the constructor call only).
        unsafe { (*self.ti).num_write_zeroes_bios = n };
    }
}

/// Collects C `argv` into slices for [`Args`] (without the NUL terminators).
///
/// # Safety
///
/// `argv` must hold `argc` valid NUL-terminated strings that live for `'a`.
unsafe fn collect_args<'a>(argc: c_uint, argv: *mut *mut c_char) -> Result<KVec<&'a [u8]>> {
    let mut v = KVec::with_capacity(argc as usize, GFP_KERNEL)?;
    for i in 0..argc as usize {
        // SAFETY: the caller guarantees `argc` valid C strings at `argv`.
        let s = unsafe { CStr::from_char_ptr(*argv.add(i)) };
        v.push(s.to_bytes(), GFP_KERNEL)?;
    }
    Ok(v)
}

/// Puts devices opened with `dm_get_device` for `ti`, last opened first.
///
/// # Safety
///
/// `ti` is live and each of `devices` was returned by `dm_get_device` for it and not put yet.
unsafe fn put_devices(ti: *mut bindings::dm_target, devices: &[*mut bindings::dm_dev]) {
    for &d in devices.iter().rev() {
        // SAFETY: the caller guarantees `ti` is live and `d` was opened for it and not put.
        unsafe { bindings::dm_put_device(ti, d) };
    }
}

/// The C callbacks of a [`Target`]. Each function below is called by device-mapper through the
/// `struct target_type` in `rust/glue.c`, via the `extern "C"` functions that
/// [`declare_target!`](crate::declare_target) generates.
///
/// Device-mapper's contract, which every function relies on: `ctr` gets a new `dm_target` of
/// this type and `argc` strings; the other callbacks are called only between a successful `ctr`
/// and `dtr`, with `ti` live (it is freed after `dtr` returns); `map` and `end_io` get a bio
/// that is the target's until it is remapped or completed; no bio is in flight in the target
/// when `postsuspend` and `dtr` run.
pub struct Adapter<T>(PhantomData<T>);

impl<T: Target> Adapter<T> {
    /// # Safety
    ///
    /// Device-mapper's `ctr` contract (see [`Adapter`]).
    pub unsafe fn ctr(ti: *mut bindings::dm_target, argc: c_uint, argv: *mut *mut c_char) -> c_int {
        const {
            assert!(
                T::WORKQUEUE.is_some() || !(T::HAS_IO_DONE || T::HAS_BIO_WORK),
                "a target with io_done or bio_work needs a WORKQUEUE"
            )
        };
        const {
            assert!(
                T::MAP_WORKQUEUE.is_some() || !T::HAS_MAP_DEFERRED,
                "a target with map_deferred needs a MAP_WORKQUEUE"
            )
        };
        // SAFETY: device-mapper calls `ctr` in process context with no lock that forbids sleeping.
        let sleep = unsafe { MaySleep::new() };
        let mut ctx = TargetCtx {
            ti,
            devices: KVec::new(),
            keys: KVec::new(),
            workqueue: None,
            clones: None,
            sleep,
            _p: PhantomData,
        };
        // SAFETY: device-mapper's `ctr` contract, which the caller guarantees.
        let r = unsafe { Self::construct(&mut ctx, argc, argv) };
        if let Some(prefix) = T::AUDIT_PREFIX {
            // SAFETY: `ti` is live during `ctr`; `dm_audit_log_ctr` only reads the strings.
            unsafe {
                bindings::dm_audit_log_ti(
                    bindings::DM_RUST_AUDIT_DM_CTRL,
                    prefix.as_char_ptr(),
                    c"ctr".as_char_ptr(),
                    ti,
                    r.is_ok().into(),
                )
            };
        }
        match r {
            Ok(()) => 0,
            Err(e) => {
                // Keys first: evicted from their devices while those are still open for `ti`.
                drop(core::mem::take(&mut ctx.keys));
                // SAFETY: `ctx.devices` were opened for `ti` by `get_device` and are not kept.
                unsafe { put_devices(ti, &ctx.devices) };
                // SAFETY: the constructor owns `ti`; device-mapper only reads `error`, a static
                // string.
                unsafe { (*ti).error = e.msg.as_char_ptr().cast_mut() };
                e.errno.to_errno()
            }
        }
    }

    /// Runs the target's constructor; on success `ti->private` holds the [`Holder`] and the
    /// devices moved from `ctx` into it.
    ///
    /// # Safety
    ///
    /// Device-mapper's `ctr` contract (see [`Adapter`]): `ctx.ti` is the new target, `argv` holds
    /// `argc` strings.
    unsafe fn construct(
        ctx: &mut TargetCtx<'_>,
        argc: c_uint,
        argv: *mut *mut c_char,
    ) -> Result<(), CtrError> {
        fn nomem<E>(_: E) -> CtrError {
            CtrError::new(ENOMEM, c"Cannot allocate memory")
        }
        let map_wq = match T::MAP_WORKQUEUE {
            Some(cfg) => Some(
                Workqueue::new(&cfg)
                    .map_err(|e| CtrError::new(e, c"Cannot allocate workqueue"))?,
            ),
            None => None,
        };
        // SAFETY: the caller guarantees `argv` holds `argc` strings for the call.
        let argv = unsafe { collect_args(argc, argv) }.map_err(nomem)?;
        let mut args = Args::new(&argv);
        let target = T::new(ctx, &mut args)?;
        // Made after the constructor, which may choose it per table (`set_workqueue`); nothing
        // can queue on it before the holder exists. On failure the state is dropped unused.
        let wq = match T::WORKQUEUE {
            Some(declared) => Some(
                Workqueue::new(&ctx.workqueue.take().unwrap_or(declared))
                    .map_err(|e| CtrError::new(e, c"Cannot allocate workqueue"))?,
            ),
            None => None,
        };
        // The devices move into the holder only once it exists: if the allocation fails, the
        // caller still has them to put.
        let mut holder = KBox::new(
            Holder {
                wq,
                map_wq,
                target,
                clones: ctx.clones.take(),
                keys: KVec::new(),
                devices: KVec::new(),
            },
            GFP_KERNEL,
        )
        .map_err(nomem)?;
        holder.devices = core::mem::take(&mut ctx.devices);
        holder.keys = core::mem::take(&mut ctx.keys);
        let ti = ctx.ti;
        if T::HAS_IO_DONE || T::HAS_BIO_WORK || T::HAS_MAP_DEFERRED {
            // SAFETY: the constructor owns `ti`; `io::hook`, `io::take_over` and `io::defer_map`
            // rely on this size.
            unsafe { (*ti).per_io_data_size = io::PER_IO_SIZE };
        }
        // SAFETY: the constructor owns `ti`; `dtr` takes the box back.
        unsafe { (*ti).private = KBox::into_raw(holder).cast::<c_void>() };
        Ok(())
    }

    /// # Safety
    ///
    /// See [`Adapter`].
    pub unsafe fn dtr(ti: *mut bindings::dm_target) {
        // SAFETY: `private` holds the box `ctr` leaked; the target is going away and no callback
        // runs concurrently with the destructor.
        let holder = unsafe { KBox::from_raw((*ti).private.cast::<Holder<T>>()) };
        let Holder {
            wq,
            map_wq,
            target,
            clones,
            keys,
            devices,
        } = KBox::into_inner(holder);
        // Deferred work refers to the state: `destroy_workqueue` waits for all of it first.
        drop(map_wq);
        drop(wq);
        drop(target);
        // No bio is in flight (the destructor's contract), so no write clone either.
        drop(clones);
        // No bio is in flight (the destructor's contract): nothing refers to the keys.
        drop(keys);
        // SAFETY: `devices` were opened for `ti` in `ctr`; the state that used them is gone.
        unsafe { put_devices(ti, &devices) };
        if let Some(prefix) = T::AUDIT_PREFIX {
            // SAFETY: `ti` is live until `dtr` returns.
            unsafe {
                bindings::dm_audit_log_ti(
                    bindings::DM_RUST_AUDIT_DM_CTRL,
                    prefix.as_char_ptr(),
                    c"dtr".as_char_ptr(),
                    ti,
                    1,
                )
            };
        }
    }

    /// # Safety
    ///
    /// See [`Adapter`]; `bio` is a bio device-mapper hands to this target.
    pub unsafe fn map(ti: *mut bindings::dm_target, bio: *mut bindings::bio) -> c_int {
        // SAFETY: the target is constructed (see `Adapter`) and the bio is ours until remapped.
        let (ti, bio) = unsafe { (Ti::<T>::from_raw(ti), Bio::from_raw(bio)) };
        let result = ti.holder().target.map(ti, bio);
        let hooked = T::HAS_IO_DONE && matches!(result, MapResult::RemappedCompleteInWork);
        (match result {
            // The tags would go to a device that does not expect them, and no hook would put
            // them back for the bio's owner (see `io::hook`).
            MapResult::Remapped | MapResult::RemappedCompleteInWork
                if !hooked && io::payload_would_go_down::<T>(bio) =>
            {
                pr_err!("dm-rust: a bio with tags remapped without io_done: failed\n");
                bindings::DM_MAPIO_KILL
            }
            MapResult::Remapped => bindings::DM_MAPIO_REMAPPED,
            MapResult::Kill => bindings::DM_MAPIO_KILL,
            MapResult::Requeue => bindings::DM_MAPIO_REQUEUE,
            MapResult::RemappedCompleteInWork => {
                if T::HAS_IO_DONE {
                    // The bio is returned as remapped right below.
                    // SAFETY: `ctr` set `per_io_data_size` for `io_done` targets, whose workqueue
                    // exists (the assertion in `ctr`).
                    unsafe { io::hook::<T>(ti.as_raw(), bio.as_raw()) };
                }
                bindings::DM_MAPIO_REMAPPED
            }
            // SAFETY: `map` returned the request for this bio, and with it its `&mut Bio`.
            MapResult::Encrypt(req) => unsafe { super::blk_crypto::submit(ti, bio, req) },
            MapResult::CompleteInWork if T::HAS_BIO_WORK => {
                // The bio is returned as submitted right below; `take_over` completes it.
                // SAFETY: `ctr` set `per_io_data_size` for `bio_work` targets, whose workqueue
                // exists (the assertion in `ctr`).
                unsafe { io::take_over::<T>(ti.as_raw(), bio.as_raw()) };
                bindings::DM_MAPIO_SUBMITTED
            }
            MapResult::CompleteInWork => bindings::DM_MAPIO_KILL,
            MapResult::Defer => match &ti.holder().map_wq {
                Some(wq) if T::HAS_MAP_DEFERRED => {
                    // SAFETY: `ctr` set `per_io_data_size` for `map_deferred` targets and `wq` is
                    // their map workqueue; the bio is returned as submitted right below.
                    unsafe { io::defer_map::<T>(ti.as_raw(), bio.as_raw(), wq) };
                    bindings::DM_MAPIO_SUBMITTED
                }
                _ => bindings::DM_MAPIO_KILL,
            },
            MapResult::DeferFirst(n) => match &ti.holder().map_wq {
                Some(wq)
                    if T::HAS_MAP_DEFERRED
                        && n != 0
                        && u64::from(n) < bio.sectors()
                        && may_shorten(ti, bio) =>
                {
                    // SAFETY: we are in `map` for this bio (its `len_ptr` is live and covers
                    // it), `n` is below its size, and `may_shorten` left out the bios
                    // `dm_accept_partial_bio` refuses (duplicates, atomic and zoned writes, zone
                    // operations); then as for `Defer` above.
                    unsafe {
                        bindings::dm_accept_partial_bio(bio.as_raw(), n);
                        io::defer_map::<T>(ti.as_raw(), bio.as_raw(), wq);
                    }
                    bindings::DM_MAPIO_SUBMITTED
                }
                _ => bindings::DM_MAPIO_KILL,
            },
        }) as c_int
    }

    /// # Safety
    ///
    /// See [`Adapter::map`]; `error` points to the bio's status.
    pub unsafe fn end_io(
        ti: *mut bindings::dm_target,
        bio: *mut bindings::bio,
        error: *mut bindings::blk_status_t,
    ) -> c_int {
        let (ti, bio, status) =
            // SAFETY: the target is constructed (see `Adapter`), the bio is the one it remapped, and
        // device-mapper passes the status of this bio for `end_io` to change.
            unsafe { (Ti::<T>::from_raw(ti), Bio::from_raw(bio), &mut *error) };
        (match ti.holder().target.end_io(ti, bio, status) {
            EndIo::Done => bindings::DM_ENDIO_DONE,
            EndIo::Requeue => bindings::DM_ENDIO_REQUEUE,
        }) as c_int
    }

    /// Runs `f` with the target and a [`MaySleep`] for a process-context callback.
    ///
    /// # Safety
    ///
    /// See [`Adapter`]; device-mapper calls the callback in process context.
    unsafe fn in_process<R>(
        ti: *mut bindings::dm_target,
        f: impl FnOnce(&T, &Ti<T>, &MaySleep<'_>) -> R,
    ) -> R {
        // SAFETY: the caller guarantees a constructed target (see `Adapter`) and process context.
        let (ti, s) = unsafe { (Ti::<T>::from_raw(ti), MaySleep::new()) };
        f(&ti.holder().target, ti, &s)
    }

    /// # Safety
    ///
    /// See [`Adapter`].
    pub unsafe fn presuspend(ti: *mut bindings::dm_target) {
        // SAFETY: device-mapper calls `presuspend` in process context.
        unsafe { Self::in_process(ti, |t, ti, s| t.presuspend(ti, s)) }
    }

    /// # Safety
    ///
    /// See [`Adapter`].
    pub unsafe fn postsuspend(ti: *mut bindings::dm_target) {
        // SAFETY: device-mapper calls `postsuspend` in process context.
        unsafe {
            Self::in_process(ti, |t, ti, s| {
                // Work deferred before the suspend finishes before the target hears of it.
                if let Some(wq) = &ti.holder().map_wq {
                    wq.flush();
                }
                if let Some(wq) = &ti.holder().wq {
                    wq.flush();
                }
                t.postsuspend(ti, s)
            })
        }
    }

    /// # Safety
    ///
    /// See [`Adapter`].
    pub unsafe fn preresume(ti: *mut bindings::dm_target) -> c_int {
        // SAFETY: device-mapper calls `preresume` in process context.
        match unsafe { Self::in_process(ti, |t, ti, s| t.preresume(ti, s)) } {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// See [`Adapter`].
    pub unsafe fn resume(ti: *mut bindings::dm_target) {
        // SAFETY: device-mapper calls `resume` in process context.
        unsafe { Self::in_process(ti, |t, ti, s| t.resume(ti, s)) }
    }

    /// # Safety
    ///
    /// See [`Adapter`]; `result` has room for `maxlen` bytes.
    pub unsafe fn status(
        ti: *mut bindings::dm_target,
        kind: bindings::status_type_t,
        _flags: c_uint,
        result: *mut c_char,
        maxlen: c_uint,
    ) {
        // SAFETY: device-mapper's result buffer has room for `maxlen` bytes during the call.
        let mut out = unsafe { StatusWriter::from_raw(result, maxlen) };
        let Some(kind) = StatusType::from_raw(kind) else {
            return;
        };
        // SAFETY: the target is constructed (see `Adapter`).
        let ti = unsafe { Ti::<T>::from_raw(ti) };
        ti.holder().target.status(ti, kind, &mut out);
    }

    /// # Safety
    ///
    /// See [`Adapter`]; `argv` holds `argc` strings, `result` has room for `maxlen` bytes.
    pub unsafe fn message(
        ti: *mut bindings::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
        result: *mut c_char,
        maxlen: c_uint,
    ) -> c_int {
        // SAFETY: device-mapper passes `argc` strings that live for the call.
        let argv = match unsafe { collect_args(argc, argv) } {
            Ok(v) => v,
            Err(e) => return e.to_errno(),
        };
        // SAFETY: device-mapper's result buffer has room for `maxlen` bytes during the call.
        let mut out = unsafe { StatusWriter::from_raw(result, maxlen) };
        let mut args = Args::new(&argv);
        // SAFETY: device-mapper calls `message` in process context (an ioctl).
        let r = unsafe { Self::in_process(ti, |t, ti, s| t.message(ti, &mut args, &mut out, s)) };
        match r {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// See [`Adapter`]; `f` and `data` are device-mapper's callout and its argument.
    pub unsafe fn iterate_devices(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the target is constructed (see `Adapter`).
        let ti = unsafe { Ti::<T>::from_raw(ti) };
        let holder = ti.holder();
        // SAFETY: `f` and `data` are the callout in progress; the devices are the target's own.
        let mut visit = unsafe { DeviceVisitor::new(ti.as_raw(), f, data, &holder.devices) };
        holder.target.iterate_devices(&mut visit)
    }

    /// # Safety
    ///
    /// See [`Adapter`]; `limits` are the limits being computed for the mapped device.
    pub unsafe fn io_hints(ti: *mut bindings::dm_target, limits: *mut bindings::queue_limits) {
        // SAFETY: device-mapper holds no other reference to `limits` during the call.
        let mut limits = unsafe { QueueLimits::from_raw(limits) };
        // SAFETY: the target is constructed (see `Adapter`).
        let ti = unsafe { Ti::<T>::from_raw(ti) };
        ti.holder().target.io_hints(&mut limits);
    }
}

/// Connects a [`Target`] to its `struct target_type` in `rust/glue.c`: generates the
/// `dm_rust_<name>_<callback>` functions the C structure points to, and a function
/// `<name>_registration(upstream_names)` that registers the type.
#[macro_export]
macro_rules! declare_target {
    ($ty:ty, $name:ident) => {
        ::kernel::macros::paste! {
            // SAFETY: device-mapper calls these through the `target_type` with the arguments its
            // contract describes, which is what each `Adapter` function requires.
            // The abstraction's own code, expanded in the target's module (which denies unsafe).
            #[allow(unsafe_code)]
            const _: () = {
                use $crate::bindings as b;
                use $crate::dm::target::Adapter as A;
                use ::kernel::ffi::{c_char, c_int, c_uint, c_void};
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _ctr>](
                    ti: *mut b::dm_target, argc: c_uint, argv: *mut *mut c_char) -> c_int {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::ctr(ti, argc, argv) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _dtr>](ti: *mut b::dm_target) {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::dtr(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _map>](
                    ti: *mut b::dm_target, bio: *mut b::bio) -> c_int {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::map(ti, bio) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _end_io>](
                    ti: *mut b::dm_target, bio: *mut b::bio, e: *mut b::blk_status_t) -> c_int {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::end_io(ti, bio, e) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _presuspend>](ti: *mut b::dm_target) {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::presuspend(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _postsuspend>](ti: *mut b::dm_target) {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::postsuspend(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _preresume>](ti: *mut b::dm_target) -> c_int {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::preresume(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _resume>](ti: *mut b::dm_target) {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::resume(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _status>](
                    ti: *mut b::dm_target, kind: b::status_type_t, flags: c_uint,
                    result: *mut c_char, maxlen: c_uint) {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::status(ti, kind, flags, result, maxlen) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _message>](
                    ti: *mut b::dm_target, argc: c_uint, argv: *mut *mut c_char,
                    result: *mut c_char, maxlen: c_uint) -> c_int {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::message(ti, argc, argv, result, maxlen) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _iterate_devices>](
                    ti: *mut b::dm_target, f: b::iterate_devices_callout_fn,
                    data: *mut c_void) -> c_int {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::iterate_devices(ti, f, data) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _io_hints>](
                    ti: *mut b::dm_target, limits: *mut b::queue_limits) {
                    // SAFETY: device-mapper calls this through the `target_type` below with the
                    // arguments of its contract, which is what `Adapter` requires.
                    unsafe { A::<$ty>::io_hints(ti, limits) }
                }
            };

            /// Registers the target type with device-mapper.
            #[allow(unsafe_code)]
            pub(crate) fn [<$name _registration>](
                upstream_names: bool,
            ) -> ::kernel::error::Result<$crate::dm::Registration<$ty>> {
                // SAFETY: the C structure's callbacks are the functions above; nobody else uses it.
                unsafe {
                    $crate::dm::Registration::<$ty>::new(
                        &raw mut $crate::bindings::[<dm_rust_ $name _target>],
                        upstream_names,
                    )
                }
            }
        }
    };
}

/// Set once the first target type is registered (see `MaySleep::in_module_init`).
static REGISTERED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether a target type of this module was ever registered.
pub(crate) fn any_registered() -> bool {
    REGISTERED.load(core::sync::atomic::Ordering::Acquire)
}

/// A registered target type; unregisters it when dropped.
pub struct Registration<T: Target> {
    tt: *mut bindings::target_type,
    _p: PhantomData<T>,
}

// SAFETY: the registration only holds the address of a static C structure that device-mapper
// synchronises itself; dropping it from any thread is fine.
unsafe impl<T: Target> Send for Registration<T> {}
// SAFETY: `&Registration` gives no access to anything.
unsafe impl<T: Target> Sync for Registration<T> {}

impl<T: Target> Registration<T> {
    /// Fills in the name, version and features of `tt`, clears the callbacks `T` does not
    /// implement, and registers it.
    ///
    /// # Safety
    ///
    /// `tt` must be the static `target_type` whose callbacks forward to `Adapter<T>`, not
    /// registered, and not otherwise used while the registration lives.
    pub unsafe fn new(tt: *mut bindings::target_type, upstream_names: bool) -> Result<Self> {
        let name = match T::UPSTREAM_NAME {
            Some(up) if upstream_names => up,
            _ => T::NAME,
        };
        // SAFETY: the caller gives us exclusive access to `tt` until it is registered.
        let t = unsafe { &mut *tt };
        t.name = name.as_char_ptr();
        t.version = T::VERSION;
        t.features = T::FEATURES;
        if !T::HAS_END_IO {
            t.end_io = None;
        }
        if !T::HAS_PRESUSPEND {
            t.presuspend = None;
        }
        if !T::HAS_POSTSUSPEND {
            t.postsuspend = None;
        }
        if !T::HAS_PRERESUME {
            t.preresume = None;
        }
        if !T::HAS_RESUME {
            t.resume = None;
        }
        if !T::HAS_MESSAGE {
            t.message = None;
        }
        if !T::HAS_ITERATE_DEVICES {
            t.iterate_devices = None;
        }
        if !T::HAS_IO_HINTS {
            t.io_hints = None;
        }
        REGISTERED.store(true, core::sync::atomic::Ordering::Release);
        // SAFETY: `tt` is fully initialised and stays valid (static) until unregistered.
        let mut r = unsafe { bindings::dm_register_target(tt) };
        if r == EBUSY.to_errno() && name != T::NAME {
            // The kernel's module of that name is loaded (dm-crypt, say, for a LUKS root): it
            // keeps its name, and ours stays available under its own.
            pr_warn!(
                "target '{}' is taken (the kernel's module is loaded): registered as '{}'\n",
                name.to_str().unwrap_or("?"),
                T::NAME.to_str().unwrap_or("?")
            );
            t.name = T::NAME.as_char_ptr();
            // SAFETY: as above; the first attempt did not register `tt`.
            r = unsafe { bindings::dm_register_target(tt) };
        }
        if r != 0 {
            pr_err!(
                "cannot register target '{}' (error {}): a target of that name is loaded\n",
                // SAFETY: `t.name` points to one of the static names above.
                unsafe { CStr::from_char_ptr(t.name) }.to_str().unwrap_or("?"),
                r
            );
            return Err(Error::from_errno(r));
        }
        Ok(Self {
            tt,
            _p: PhantomData,
        })
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // Device-mapper holds a module reference for every table using the type, so no target
        // of it exists when the module unloads.
        // SAFETY: `tt` was registered by `new`.
        unsafe { bindings::dm_unregister_target(self.tt) };
    }
}
