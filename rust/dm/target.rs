// SPDX-License-Identifier: GPL-2.0

//! Targets: the [`Target`] trait, the C callbacks that forward to it, and registration.

use core::fmt::Write;
use core::marker::PhantomData;
use core::pin::Pin;

use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::prelude::*;

use super::args::{ArgError, Args};
use super::bio::Bio;
use super::device::{Device, DeviceVisitor, QueueLimits};
use super::io::{self, DoneIo};
use super::status::{StatusType, StatusWriter};
use super::work::Workqueue;
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
pub enum MapResult {
    /// The bio was remapped; device-mapper submits it.
    Remapped,
    /// The target submitted or queued the bio itself and will complete it.
    Submitted,
    /// Fail the bio with an I/O error.
    Kill,
    /// Ask device-mapper to requeue the bio (after a suspend, for instance).
    Requeue,
    /// The bio was remapped; device-mapper submits it, and once the lower device has finished
    /// it, [`Target::io_done`] runs in process context before the bio completes. Only for
    /// targets that implement `io_done`.
    RemappedCompleteInWork,
}

/// What `end_io` wants device-mapper to do with a completed bio.
pub enum EndIo {
    /// Complete it with the (possibly changed) status.
    Done,
    /// The target took the bio over and will complete it later.
    Incomplete,
    /// Requeue it.
    Requeue,
}

/// A device-mapper target.
///
/// Its state is created by [`Target::new`] from the table line (the constructor) and dropped
/// when device-mapper destroys the target (the destructor). `map` runs concurrently on many CPUs,
/// hence `Sync`. Callbacks a target does not implement are not registered with device-mapper at
/// all (the `#[vtable]` attribute records which ones a target implements).
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

    /// Builds the target from its table line.
    fn new(ti: &mut TargetCtx<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError>;

    /// Maps one bio.
    fn map(&self, ti: &Ti, bio: &mut Bio) -> MapResult;

    /// Sees a bio the target remapped complete; `status` may be changed.
    fn end_io(&self, _ti: &Ti, _bio: &mut Bio, _status: &mut u8) -> EndIo {
        EndIo::Done
    }

    /// Finishes, in process context, a bio that `map` returned as
    /// [`MapResult::RemappedCompleteInWork`]; returns the status the bio completes with.
    fn io_done(&self, _ti: &Ti, io: &mut DoneIo<'_>) -> u8 {
        io.lower_status()
    }

    /// The workqueue `io_done` runs on (default: the system workqueue).
    fn io_queue(&self) -> Option<&Workqueue> {
        None
    }

    /// Before the device suspends.
    fn presuspend(&self, _ti: &Ti) {}

    /// After the device suspended: no bio is in flight in this target.
    fn postsuspend(&self, _ti: &Ti) {}

    /// Before the device resumes with this table; an error keeps the device suspended.
    fn preresume(&self, _ti: &Ti) -> Result {
        Ok(())
    }

    /// After the device resumed.
    fn resume(&self, _ti: &Ti) {}

    /// Writes the status (`dmsetup status`), the table line (`dmsetup table`) or the IMA record.
    fn status(&self, _ti: &Ti, _kind: StatusType, _out: &mut StatusWriter<'_>) {}

    /// Handles `dmsetup message`; may write a reply into `out`.
    fn message(&self, _args: &mut Args<'_>, _out: &mut StatusWriter<'_>) -> Result {
        Err(EINVAL)
    }

    /// Calls `visit` for each underlying device and the area of it that the target uses.
    fn iterate_devices(&self, _visit: &mut DeviceVisitor<'_>) -> c_int {
        0
    }

    /// Adjusts the queue limits of the mapped device.
    fn io_hints(&self, _limits: &mut QueueLimits<'_>) {}
}

/// A read-only view of a constructed target (`struct dm_target`).
#[repr(transparent)]
pub struct Ti(kernel::types::Opaque<bindings::dm_target>);

impl Ti {
    /// # Safety
    ///
    /// `ptr` must point to a live `struct dm_target` for the lifetime `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::dm_target) -> &'a Self {
        // SAFETY: `Ti` is a transparent wrapper of `dm_target`; the caller guarantees liveness.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::dm_target {
        self.0.get()
    }

    /// First sector of the target in the mapped device.
    pub fn begin(&self) -> u64 {
        // SAFETY: `begin` is set before the constructor runs and never changes afterwards.
        unsafe { (*self.as_raw()).begin }
    }

    /// Length of the target in sectors.
    pub fn len(&self) -> u64 {
        // SAFETY: as for `begin`.
        unsafe { (*self.as_raw()).len }
    }

    /// The name the target type is registered under.
    pub fn type_name(&self) -> &str {
        // SAFETY: a constructed target's type is registered, with a static name.
        let name = unsafe { CStr::from_char_ptr((*(*self.as_raw()).type_).name) };
        name.to_str().unwrap_or("?")
    }

    /// Writes `target_name=<name>,target_version=<x.y.z>`, the start of every IMA record
    /// (`DMEMIT_TARGET_NAME_VERSION`).
    pub fn write_ima_name_version(&self, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        // SAFETY: a constructed target's type is registered and its version never changes.
        let [a, b, c] = unsafe { (*(*self.as_raw()).type_).version };
        write!(
            out,
            "target_name={},target_version={a}.{b}.{c}",
            self.type_name()
        )
    }

    /// Sector `sector` of the mapped device, relative to the start of this target.
    pub fn offset(&self, sector: u64) -> u64 {
        sector - self.begin()
    }

    /// The mapped device's block device (`/dev/dm-N`).
    fn mapped_bdev(&self) -> *mut bindings::block_device {
        // A constructed target belongs to a table, and the table to a mapped device.
        // SAFETY: both outlive the target; `dm_disk` returns the device's live gendisk.
        unsafe {
            let md = bindings::dm_table_get_md((*self.as_raw()).table);
            (*bindings::dm_disk(md)).part0
        }
    }

    /// Tells the LSMs (IPE) the dm-verity properties of the mapped device: the root digest and
    /// its algorithm, and the root hash signature, or its absence, which is also a property.
    /// On failure the root digest is withdrawn again, so the device carries none.
    pub fn set_verity_integrity(&self, alg: &CStr, digest: &[u8], sig: Option<&[u8]>) -> Result {
        let bdev = self.mapped_bdev();
        let root = bindings::dm_verity_digest {
            alg: alg.as_char_ptr(),
            digest: digest.as_ptr(),
            digest_len: digest.len(),
        };
        // The LSMs copy what they keep of `root` during the call.
        // SAFETY: `bdev` is the live mapped device; `root` points to valid memory.
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
        // SAFETY: as above; a NULL signature marks the device as unsigned.
        let r = kernel::error::to_result(unsafe {
            bindings::security_bdev_setintegrity(
                bdev,
                bindings::lsm_integrity_type_LSM_INT_DMVERITY_SIG_VALID,
                sig_ptr,
                sig_len,
            )
        });
        if r.is_err() {
            // SAFETY: as above; NULL withdraws the root digest.
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

/// The target being constructed: a [`Ti`] plus what a constructor may set up.
pub struct TargetCtx<'a> {
    ti: *mut bindings::dm_target,
    _p: PhantomData<&'a mut bindings::dm_target>,
}

impl TargetCtx<'_> {
    /// The target as seen by the other callbacks.
    pub fn ti(&self) -> &Ti {
        // SAFETY: `self.ti` is live for the whole constructor call (`TargetCtx`'s lifetime).
        unsafe { Ti::from_raw(self.ti) }
    }

    /// Opens `path` (a device path or `major:minor`) with the table's mode.
    pub fn get_device(&mut self, path: &[u8]) -> Result<Device, CtrError> {
        // SAFETY: `self.ti` is live and is being constructed, so it belongs to a table.
        let mode = unsafe { bindings::dm_table_get_mode((*self.ti).table) };
        // `Device` releases the device in `Drop`, when the target state owning it is dropped by
        // the destructor, while `ti` is still live.
        // SAFETY: `self.ti` is a target under construction.
        unsafe { Device::open(self.ti, path, mode) }
            .map_err(|e| CtrError::new(e, c"Device lookup failed"))
    }

    /// Whether the table is loaded read-only (`dmsetup --readonly`).
    pub fn read_only(&self) -> bool {
        // SAFETY: `self.ti` is live and belongs to a table.
        let mode = unsafe { bindings::dm_table_get_mode((*self.ti).table) };
        mode & !bindings::DM_RUST_BLK_OPEN_READ == 0
    }

    /// Number of empty flush bios device-mapper sends to `map` for each flush.
    pub fn set_num_flush_bios(&mut self, n: u32) {
        // SAFETY: the constructor has exclusive access to `ti`.
        unsafe { (*self.ti).num_flush_bios = n };
    }

    /// Number of bios device-mapper sends to `map` for each discard (0 disables discards).
    pub fn set_num_discard_bios(&mut self, n: u32) {
        // SAFETY: as above.
        unsafe { (*self.ti).num_discard_bios = n };
    }

    /// Number of bios device-mapper sends to `map` for each secure erase.
    pub fn set_num_secure_erase_bios(&mut self, n: u32) {
        // SAFETY: as above.
        unsafe { (*self.ti).num_secure_erase_bios = n };
    }

    /// Number of bios device-mapper sends to `map` for each write-zeroes request.
    pub fn set_num_write_zeroes_bios(&mut self, n: u32) {
        // SAFETY: as above.
        unsafe { (*self.ti).num_write_zeroes_bios = n };
    }
}

/// Gets the target's state back from `ti->private`.
///
/// # Safety
///
/// `ti` must be a live target whose constructor (`ctr::<T>`) succeeded and whose destructor has
/// not yet run.
pub(crate) unsafe fn state<'a, T: Target>(ti: *mut bindings::dm_target) -> &'a T {
    // SAFETY: `ctr::<T>` stored a `Pin<KBox<T>>` there, which `dtr::<T>` frees.
    unsafe { &*(*ti).private.cast::<T>() }
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

/// The C callbacks of a [`Target`]. Each function below is called by device-mapper through the
/// `struct target_type` in `rust/glue.c`, via the `extern "C"` functions that
/// [`declare_target!`](crate::declare_target) generates.
pub struct Adapter<T>(PhantomData<T>);

impl<T: Target> Adapter<T> {
    /// # Safety
    ///
    /// Device-mapper's `ctr` contract: `ti` is a new target of this type, `argv` holds `argc`
    /// strings. Same for the other callbacks below, which device-mapper calls only between a
    /// successful `ctr` and `dtr`.
    pub unsafe fn ctr(ti: *mut bindings::dm_target, argc: c_uint, argv: *mut *mut c_char) -> c_int {
        let mut ctx = TargetCtx {
            ti,
            _p: PhantomData,
        };
        // SAFETY: by the contract above.
        let argv = match unsafe { collect_args(argc, argv) } {
            Ok(v) => v,
            Err(e) => return Self::fail(ti, CtrError::new(e, c"Cannot allocate memory")),
        };
        let mut args = Args::new(&argv);
        match T::new(&mut ctx, &mut args) {
            Ok(state) => {
                if T::HAS_IO_DONE {
                    // SAFETY: the constructor owns `ti`.
                    unsafe { (*ti).per_io_data_size = io::PER_IO_SIZE };
                }
                // SAFETY: the state is never moved out of the box again: `dtr` frees it in place.
                let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(state) });
                // SAFETY: the constructor owns `ti`.
                unsafe { (*ti).private = raw.cast::<c_void>() };
                0
            }
            Err(e) => Self::fail(ti, e),
        }
    }

    fn fail(ti: *mut bindings::dm_target, e: CtrError) -> c_int {
        // SAFETY: the constructor owns `ti`; device-mapper only reads `error` (a static string).
        unsafe { (*ti).error = e.msg.as_char_ptr().cast_mut() };
        e.errno.to_errno()
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`].
    pub unsafe fn dtr(ti: *mut bindings::dm_target) {
        // SAFETY: `private` holds the box `ctr` leaked; the target is going away.
        let t = unsafe { KBox::from_raw((*ti).private.cast::<T>()) };
        // Work deferred with `work::defer` refers to the target: let it finish first.
        if let Some(q) = t.io_queue() {
            q.flush();
        }
        drop(t);
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`]; `bio` is a bio device-mapper hands to this target.
    pub unsafe fn map(ti: *mut bindings::dm_target, bio: *mut bindings::bio) -> c_int {
        // SAFETY: by the contract above.
        let (t, ti, bio) = unsafe { (state::<T>(ti), Ti::from_raw(ti), Bio::from_raw(bio)) };
        (match t.map(ti, bio) {
            MapResult::Remapped => bindings::DM_MAPIO_REMAPPED,
            MapResult::Submitted => bindings::DM_MAPIO_SUBMITTED,
            MapResult::Kill => bindings::DM_MAPIO_KILL,
            MapResult::Requeue => bindings::DM_MAPIO_REQUEUE,
            MapResult::RemappedCompleteInWork => {
                if T::HAS_IO_DONE {
                    // The bio is returned as remapped right below.
                    // SAFETY: `per_io_data_size` was set for `io_done` in `ctr`.
                    unsafe { io::hook::<T>(ti.as_raw(), bio.as_raw()) };
                }
                bindings::DM_MAPIO_REMAPPED
            }
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
        let (t, ti, bio, status) =
            // SAFETY: by the contract above.
            unsafe { (state::<T>(ti), Ti::from_raw(ti), Bio::from_raw(bio), &mut *error) };
        (match t.end_io(ti, bio, status) {
            EndIo::Done => bindings::DM_ENDIO_DONE,
            EndIo::Incomplete => bindings::DM_ENDIO_INCOMPLETE,
            EndIo::Requeue => bindings::DM_ENDIO_REQUEUE,
        }) as c_int
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`].
    pub unsafe fn presuspend(ti: *mut bindings::dm_target) {
        // SAFETY: by the contract above.
        unsafe { state::<T>(ti).presuspend(Ti::from_raw(ti)) }
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`].
    pub unsafe fn postsuspend(ti: *mut bindings::dm_target) {
        // SAFETY: by the contract above.
        unsafe { state::<T>(ti).postsuspend(Ti::from_raw(ti)) }
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`].
    pub unsafe fn preresume(ti: *mut bindings::dm_target) -> c_int {
        // SAFETY: by the contract above.
        match unsafe { state::<T>(ti).preresume(Ti::from_raw(ti)) } {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`].
    pub unsafe fn resume(ti: *mut bindings::dm_target) {
        // SAFETY: by the contract above.
        unsafe { state::<T>(ti).resume(Ti::from_raw(ti)) }
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`]; `result` has room for `maxlen` bytes.
    pub unsafe fn status(
        ti: *mut bindings::dm_target,
        kind: bindings::status_type_t,
        _flags: c_uint,
        result: *mut c_char,
        maxlen: c_uint,
    ) {
        // SAFETY: by the contract above.
        let mut out = unsafe { StatusWriter::from_raw(result, maxlen) };
        let Some(kind) = StatusType::from_raw(kind) else {
            return;
        };
        // SAFETY: by the contract above.
        unsafe { state::<T>(ti).status(Ti::from_raw(ti), kind, &mut out) };
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`]; `argv` holds `argc` strings, `result` has room for `maxlen` bytes.
    pub unsafe fn message(
        ti: *mut bindings::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
        result: *mut c_char,
        maxlen: c_uint,
    ) -> c_int {
        // SAFETY: by the contract above.
        let argv = match unsafe { collect_args(argc, argv) } {
            Ok(v) => v,
            Err(e) => return e.to_errno(),
        };
        // SAFETY: by the contract above.
        let mut out = unsafe { StatusWriter::from_raw(result, maxlen) };
        let mut args = Args::new(&argv);
        // SAFETY: by the contract above.
        match unsafe { state::<T>(ti) }.message(&mut args, &mut out) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`]; `f` and `data` are device-mapper's callout and its argument.
    pub unsafe fn iterate_devices(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: by the contract above.
        let mut visit = unsafe { DeviceVisitor::new(ti, f, data) };
        // SAFETY: by the contract above.
        unsafe { state::<T>(ti) }.iterate_devices(&mut visit)
    }

    /// # Safety
    ///
    /// See [`Adapter::ctr`]; `limits` are the limits being computed for the mapped device.
    pub unsafe fn io_hints(ti: *mut bindings::dm_target, limits: *mut bindings::queue_limits) {
        // SAFETY: by the contract above; device-mapper holds no other reference to `limits`.
        let mut limits = unsafe { QueueLimits::from_raw(limits) };
        // SAFETY: by the contract above.
        unsafe { state::<T>(ti) }.io_hints(&mut limits);
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
            const _: () = {
                use $crate::bindings as b;
                use $crate::dm::target::Adapter as A;
                use ::kernel::ffi::{c_char, c_int, c_uint, c_void};
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _ctr>](
                    ti: *mut b::dm_target, argc: c_uint, argv: *mut *mut c_char) -> c_int {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::ctr(ti, argc, argv) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _dtr>](ti: *mut b::dm_target) {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::dtr(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _map>](
                    ti: *mut b::dm_target, bio: *mut b::bio) -> c_int {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::map(ti, bio) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _end_io>](
                    ti: *mut b::dm_target, bio: *mut b::bio, e: *mut b::blk_status_t) -> c_int {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::end_io(ti, bio, e) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _presuspend>](ti: *mut b::dm_target) {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::presuspend(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _postsuspend>](ti: *mut b::dm_target) {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::postsuspend(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _preresume>](ti: *mut b::dm_target) -> c_int {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::preresume(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _resume>](ti: *mut b::dm_target) {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::resume(ti) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _status>](
                    ti: *mut b::dm_target, kind: b::status_type_t, flags: c_uint,
                    result: *mut c_char, maxlen: c_uint) {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::status(ti, kind, flags, result, maxlen) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _message>](
                    ti: *mut b::dm_target, argc: c_uint, argv: *mut *mut c_char,
                    result: *mut c_char, maxlen: c_uint) -> c_int {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::message(ti, argc, argv, result, maxlen) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _iterate_devices>](
                    ti: *mut b::dm_target, f: b::iterate_devices_callout_fn,
                    data: *mut c_void) -> c_int {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::iterate_devices(ti, f, data) }
                }
                #[no_mangle]
                unsafe extern "C" fn [<dm_rust_ $name _io_hints>](
                    ti: *mut b::dm_target, limits: *mut b::queue_limits) {
                    // SAFETY: see above.
                    unsafe { A::<$ty>::io_hints(ti, limits) }
                }
            };

            /// Registers the target type with device-mapper.
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
        // SAFETY: `tt` is fully initialised and stays valid (static) until unregistered.
        let r = unsafe { bindings::dm_register_target(tt) };
        if r != 0 {
            pr_err!(
                "cannot register target '{}' (error {}): a target of that name is loaded\n",
                name.to_str().unwrap_or("?"),
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
