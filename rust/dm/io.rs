// SPDX-License-Identifier: GPL-2.0

//! Completion of bios in process context.
//!
//! When `map` returns [`MapResult::RemappedCompleteInWork`](super::MapResult), the abstraction
//! takes the bio's completion over: once the lower device has finished the bio, a work item runs
//! [`Target::io_done`](super::Target::io_done) in process context (where it may sleep, read
//! metadata and hash), and the bio completes with the status that returns. Until then the bio's
//! data is the target's to inspect or change. The state this needs lives in the bio's per-bio
//! data (`ti->per_io_data_size`), so nothing is allocated per I/O.

use core::marker::PhantomData;
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use kernel::ffi::c_void;
use kernel::prelude::*;

use super::clone::ClonePools;
use super::context::MaySleep;
use super::target::{Target, Ti};
use crate::bindings;

/// Per-bio state of a bio whose completion is deferred.
#[repr(C)]
pub(crate) struct IoHeader {
    work: bindings::work_struct,
    /// The work of [`Target::map_deferred`] (its own item: the bio may complete, and `work` be
    /// initialised for `io_done`, while this one is still running).
    map_work: bindings::work_struct,
    ti: *mut bindings::dm_target,
    orig_end_io: bindings::bio_end_io_t,
    orig_private: *mut c_void,
    /// The bio's position and size at submission (the lower device consumes `bi_iter`).
    iter: bindings::bvec_iter,
    /// A hooked bio of a target that stores its tags itself: the integrity payload taken off
    /// it while it is down (null if none), put back before it completes.
    integrity: *mut bindings::bio_integrity_payload,
    /// A taken-over bio ([`take_over`]): what keeps it from completing, one for its work item
    /// until `bio_work` has returned and one for each write clone in flight
    /// ([`TakenIo::write_clone`]); the last one to go completes it ([`put_taken`]).
    pub(crate) pending: AtomicU32,
    /// A taken-over bio: the status it completes with, the first error of `bio_work` or of a
    /// clone (`BLK_STS_OK` while none).
    pub(crate) status: AtomicU8,
    /// A taken-over bio: the page pool of the target's clone pools (null without), to which
    /// the completions of its write clones give their pages back. Set by [`take_over`].
    pub(crate) clone_pool: *mut bindings::mempool_t,
}

/// Bytes of per-bio data a target with deferred completions needs.
pub(crate) const PER_IO_SIZE: u32 = size_of::<IoHeader>() as u32;

/// Hooks `bio`'s completion so that [`Target::io_done`] runs first.
///
/// # Safety
///
/// `ti` must be a constructed target of type `T` with `per_io_data_size == PER_IO_SIZE` and a
/// workqueue, and `bio` a bio device-mapper handed to its `map`, about to be returned as
/// remapped.
pub(crate) unsafe fn hook<T: Target>(ti: *mut bindings::dm_target, bio: *mut bindings::bio) {
    // SAFETY: the caller guarantees the per-bio data is ours and `PER_IO_SIZE` bytes long, and
    // the bio is ours to change until it is submitted.
    unsafe {
        let hdr = bindings::dm_per_bio_data(bio, PER_IO_SIZE as usize).cast::<IoHeader>();
        (*hdr).ti = ti;
        (*hdr).orig_end_io = (*bio).bi_end_io;
        (*hdr).orig_private = (*bio).bi_private;
        (*hdr).iter = (*bio).bi_iter;
        // A target that stores the tags itself (`DM_TARGET_INTEGRITY`) has copied what it needs
        // of the payload: the device below, which has no such profile, must not see it.
        (*hdr).integrity = if stores_integrity::<T>() {
            bindings::dm_rust_bio_detach_integrity(bio)
        } else {
            core::ptr::null_mut()
        };
        (*bio).bi_end_io = Some(end_io::<T>);
        (*bio).bi_private = hdr.cast();
    }
}

/// Whether targets of type `T` keep the integrity payload of their bios themselves (their mapped
/// device's integrity profile is their own: `DM_TARGET_INTEGRITY`), rather than passing it down.
pub(crate) const fn stores_integrity<T: Target>() -> bool {
    T::FEATURES & bindings::DM_TARGET_INTEGRITY as u64 != 0
}

/// A bio of such a target that would go down with its payload, where no completion hook could
/// put it back: the caller fails it instead.
pub(crate) fn payload_would_go_down<T: Target>(bio: &super::Bio) -> bool {
    stores_integrity::<T>() && bio.integrity_size().is_some()
}

/// The lower device finished the bio (any context): queue the work on the target's workqueue.
unsafe extern "C" fn end_io<T: Target>(bio: *mut bindings::bio) {
    // `hook` set `bi_private` to the header in this bio's per-bio data, and device-mapper keeps
    // the target (and so its workqueue, see `Adapter::dtr`) alive while one of its bios is in
    // flight, which this one is until `work` completes it.
    // SAFETY: so `hdr` is valid and `Ti::from_raw`'s contract holds.
    unsafe {
        let hdr = (*bio).bi_private.cast::<IoHeader>();
        let ti = Ti::<T>::from_raw((*hdr).ti);
        match &ti.holder().wq {
            Some(wq) => {
                bindings::dm_rust_init_io_work(&raw mut (*hdr).work, Some(work::<T>));
                bindings::dm_rust_queue_work(wq.as_raw(), &raw mut (*hdr).work);
            }
            // Unreachable (`Adapter::ctr` asserts a queue for `io_done` targets); complete the
            // bio as it is rather than leave it hanging.
            None => finish(bio, hdr, (*bio).bi_status),
        }
    }
}

/// Restores the bio's completion and completes it with `status`.
///
/// # Safety
///
/// `bio` is a bio hooked by `hook`, finished by the lower device, and `hdr` its header.
unsafe fn finish(bio: *mut bindings::bio, hdr: *mut IoHeader, status: u8) {
    // SAFETY: the caller guarantees a hooked, finished bio and its header; nothing touches
    // `hdr` or `bio` after `bio_endio`.
    unsafe {
        if !(*hdr).integrity.is_null() {
            bindings::dm_rust_bio_attach_integrity(bio, (*hdr).integrity);
        }
        (*bio).bi_end_io = (*hdr).orig_end_io;
        (*bio).bi_private = (*hdr).orig_private;
        (*bio).bi_status = status;
        bindings::bio_endio(bio);
    }
}

/// Process context: let the target finish the I/O, then complete the bio.
unsafe extern "C" fn work<T: Target>(w: *mut bindings::work_struct) {
    // SAFETY: `w` is the first field of an `IoHeader` (`repr(C)`), queued by `end_io`; the bio
    // is still in flight, so its target is alive (see `end_io`); work items run in process
    // context.
    unsafe {
        let hdr = w.cast::<IoHeader>();
        let ti = Ti::<T>::from_raw((*hdr).ti);
        let bio = bindings::dm_bio_from_per_bio_data(hdr.cast(), PER_IO_SIZE as usize);
        let mut io = DoneIo {
            bio,
            hdr,
            _p: PhantomData,
        };
        let s = MaySleep::new();
        let status = ti.holder().target.io_done(ti, &mut io, &s);
        finish(bio, hdr, status);
    }
}

/// Hands a bio `map` returned as [`MapResult::Defer`](super::MapResult) to process context:
/// [`Target::map_deferred`] runs on the target's map workqueue, then the bio is submitted or
/// completed as it says.
///
/// # Safety
///
/// `ti` must be a constructed target of type `T` with `per_io_data_size == PER_IO_SIZE`, `wq`
/// its map workqueue, and `bio` a bio device-mapper handed to its `map`, about to be returned
/// as submitted (`DM_MAPIO_SUBMITTED`).
pub(crate) unsafe fn defer_map<T: Target>(
    ti: *mut bindings::dm_target,
    bio: *mut bindings::bio,
    wq: &super::work::Workqueue,
) {
    // SAFETY: the caller guarantees the per-bio data is ours and `PER_IO_SIZE` bytes long; the
    // bio is ours until `map_work` submits or completes it.
    unsafe {
        let hdr = bindings::dm_per_bio_data(bio, PER_IO_SIZE as usize).cast::<IoHeader>();
        (*hdr).ti = ti;
        bindings::dm_rust_init_map_work(&raw mut (*hdr).map_work, Some(map_work::<T>));
        bindings::dm_rust_queue_work(wq.as_raw(), &raw mut (*hdr).map_work);
    }
}

/// What [`Target::map_deferred`] decided for a bio.
pub enum Deferred {
    /// The bio was remapped: submit it.
    Remapped,
    /// The bio was remapped: submit it, and run [`Target::io_done`] once the lower device has
    /// finished it (as [`MapResult::RemappedCompleteInWork`](super::MapResult)).
    RemappedCompleteInWork,
    /// Complete the bio now with this status (`BLK_STS_*`), without submitting it.
    Complete(u8),
}

/// Process context: let the target map the bio, then submit or complete it.
unsafe extern "C" fn map_work<T: Target>(w: *mut bindings::work_struct) {
    // `w` is the `map_work` field of an `IoHeader` that `defer_map` queued; the bio it belongs
    // to is in flight (returned as submitted), so device-mapper keeps its target alive, and the
    // adapter destroys the map workqueue (waiting for this function) before the state.
    // SAFETY: so the header, the bio and `Ti::from_raw`'s contract are valid; work items run in
    // process context.
    unsafe {
        let hdr = w
            .byte_sub(core::mem::offset_of!(IoHeader, map_work))
            .cast::<IoHeader>();
        let ti = Ti::<T>::from_raw((*hdr).ti);
        let raw = bindings::dm_bio_from_per_bio_data(hdr.cast(), PER_IO_SIZE as usize);
        let s = MaySleep::new();
        let decision = ti
            .holder()
            .target
            .map_deferred(ti, super::Bio::from_raw(raw), &s);
        let hooked = T::HAS_IO_DONE && matches!(decision, Deferred::RemappedCompleteInWork);
        match decision {
            // The tags would go to a device that does not expect them, and no hook would put
            // them back for the bio's owner (see `hook`).
            Deferred::Remapped | Deferred::RemappedCompleteInWork
                if !hooked && payload_would_go_down::<T>(super::Bio::from_raw(raw)) =>
            {
                pr_err!("dm-rust: a bio with tags remapped without io_done: failed\n");
                (*raw).bi_status = bindings::DM_RUST_BLK_STS_IOERR;
                bindings::bio_endio(raw);
            }
            Deferred::Remapped => bindings::dm_submit_bio_remap(raw, core::ptr::null_mut()),
            Deferred::RemappedCompleteInWork => {
                if T::HAS_IO_DONE {
                    hook::<T>(ti.as_raw(), raw);
                }
                bindings::dm_submit_bio_remap(raw, core::ptr::null_mut());
            }
            Deferred::Complete(status) => {
                (*raw).bi_status = status;
                bindings::bio_endio(raw);
            }
        }
    }
}

impl super::Bio {
    /// Calls `f(i, block)` for each consecutive `block_size`-byte block of the bio's data, in
    /// order (for a bio not yet submitted, in [`Target::map_deferred`]); each block must lie
    /// within one page segment. The blocks are the submitter's data (a write's page cache or
    /// user pages), so they are lent read-only.
    pub fn for_each_block<E>(
        &self,
        block_size: u32,
        mut f: impl FnMut(u32, &IoBlock<'_>) -> Result<(), E>,
    ) -> Result<(), BlockError<E>> {
        // SAFETY: the bio is ours until it is submitted (`Bio`'s invariant); its `bi_iter`
        // describes its data.
        unsafe {
            for_each_block(self.as_raw(), (*self.as_raw()).bi_iter, block_size, |i, b| f(i, b))
        }
    }
}

/// Why [`DoneIo::for_each_block`] stopped.
pub enum BlockError<E> {
    /// A block was not contiguous in memory (the queue limits should prevent it).
    Unaligned,
    /// The callback failed.
    Callback(E),
}

/// One block of a bio's data, mapped for the duration of a [`DoneIo::for_each_block`] callback.
///
/// The memory is the bio's pages: for direct I/O it is user memory that user space (or another
/// bio reading into the same buffer) may change while we look at it. So there is no `&[u8]` or
/// `&mut [u8]` to it, which would promise that nobody else does; the block is read and written
/// only by copies and by the kernel's C functions, and a value that must not change is copied
/// out first.
pub struct IoBlock<'a> {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    /// The page the block lies in and its offset there, for the crypto API's scatterlists.
    pub(crate) page: *mut bindings::page,
    pub(crate) offset: u32,
    pub(crate) _p: PhantomData<&'a ()>,
}

impl IoBlock<'_> {
    /// Size of the block in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Copies the block into `dst`, which must be as long; a stable snapshot of its bytes.
    pub fn copy_to(&self, dst: &mut [u8]) {
        let n = self.len.min(dst.len());
        // A racing writer makes the snapshot a mix of old and new bytes, nothing worse.
        // SAFETY: `ptr` is mapped and `len` bytes long for the callback (`for_each_block`);
        // `dst` is our own memory and cannot overlap the bio's pages.
        unsafe { bindings::memcpy(dst.as_mut_ptr().cast(), self.ptr.cast(), n) };
    }

    /// Overwrites the block with `src`, which must be as long.
    pub fn copy_from(&mut self, src: &[u8]) {
        let n = self.len.min(src.len());
        // SAFETY: `ptr` is mapped and `len` bytes long for the callback (`for_each_block`); `src`
        // is our own memory and cannot overlap the bio's pages.
        unsafe { bindings::memcpy(self.ptr.cast(), src.as_ptr().cast(), n) };
    }

    /// Overwrites the block with zeroes.
    pub fn zero(&mut self) {
        // SAFETY: `ptr` is mapped and `len` bytes long for the callback (`for_each_block`).
        unsafe { bindings::memset(self.ptr.cast(), 0, self.len) };
    }
}

/// A bio the lower device has finished, in process context, before it completes.
pub struct DoneIo<'a> {
    bio: *mut bindings::bio,
    hdr: *mut IoHeader,
    _p: PhantomData<&'a mut bindings::bio>,
}

impl DoneIo<'_> {
    /// The lower device's status (`BLK_STS_OK` when the I/O succeeded).
    pub fn lower_status(&self) -> u8 {
        // SAFETY: the bio is ours until it completes.
        unsafe { (*self.bio).bi_status }
    }

    /// First sector of the I/O on the device it was remapped to.
    pub fn sector(&self) -> u64 {
        // SAFETY: the header is live with the bio.
        unsafe { (*self.hdr).iter.bi_sector }
    }

    /// Size of the I/O in bytes.
    pub fn size(&self) -> u32 {
        // SAFETY: the header lives in the bio's per-bio data, valid until the bio completes
        // (after `io_done` returns).
        unsafe { (*self.hdr).iter.bi_size }
    }

    /// The bio's operation.
    pub fn op(&self) -> super::bio::Op {
        super::bio::Op::from_raw(
            // SAFETY: the bio is ours until it completes.
            unsafe { bindings::dm_rust_bio_op(self.bio) },
        )
    }

    /// Whether the bio asked for its data on stable storage before completing (`REQ_FUA`).
    pub fn is_fua(&self) -> bool {
        // SAFETY: the bio is ours until it completes.
        unsafe { (*self.bio).bi_opf & bindings::DM_RUST_REQ_FUA != 0 }
    }

    /// Whether this is read-ahead (which may fail without harm).
    pub fn is_readahead(&self) -> bool {
        // SAFETY: the bio is ours.
        unsafe { (*self.bio).bi_opf & bindings::DM_RUST_REQ_RAHEAD != 0 }
    }

    /// Sends a device-mapper audit record about `sector` of this I/O (`dm_audit_log_bio`).
    pub fn audit(&self, prefix: &CStr, op: &CStr, sector: u64, result: i32) {
        // SAFETY: the bio is live until it completes; the strings are read during the call.
        unsafe {
            bindings::dm_audit_log_bio(
                prefix.as_char_ptr(),
                op.as_char_ptr(),
                self.bio,
                sector,
                result,
            )
        };
    }

    /// Calls `f(i, block)` for each consecutive `block_size`-byte block of the I/O's data, in
    /// order; each block must lie within one page segment.
    pub fn for_each_block<E>(
        &self,
        block_size: u32,
        f: impl FnMut(u32, &mut IoBlock<'_>) -> Result<(), E>,
    ) -> Result<(), BlockError<E>> {
        // SAFETY: the header is live with the bio, which is ours until it completes (after
        // `io_done` returns); its data stays valid until then.
        unsafe { for_each_block(self.bio, (*self.hdr).iter, block_size, f) }
    }
}

/// Calls `f(i, block)` for each consecutive `block_size`-byte block of `bio`'s data from `iter`
/// on, in order, each block mapped for the call.
///
/// # Safety
///
/// `bio` is a bio whose data the caller may read and write for the call, and `iter` lies within
/// its data.
pub(crate) unsafe fn for_each_block<E>(
    bio: *mut bindings::bio,
    mut iter: bindings::bvec_iter,
    block_size: u32,
    mut f: impl FnMut(u32, &mut IoBlock<'_>) -> Result<(), E>,
) -> Result<(), BlockError<E>> {
    let Some(n) = iter.bi_size.checked_div(block_size) else {
        return Err(BlockError::Unaligned);
    };
    for i in 0..n {
        // SAFETY: `iter` stays within the bio's data (the caller's guarantee, and `i < n`).
        let bv = unsafe { bindings::dm_rust_bio_iter_iovec(bio, iter) };
        if bv.bv_len < block_size {
            return Err(BlockError::Unaligned);
        }
        // SAFETY: the segment's page is part of the bio, which is the caller's for the call;
        // `kmap_local_page` maps it until the matching `kunmap_local`.
        let base = unsafe { bindings::dm_rust_kmap_local_page(bv.bv_page) }.cast::<u8>();
        let mut block = IoBlock {
            // SAFETY: `bv_offset + block_size <= PAGE_SIZE` (checked `bv_len` is within the
            // page), so the block lies in the mapped page.
            ptr: unsafe { base.add(bv.bv_offset as usize) },
            len: block_size as usize,
            page: bv.bv_page,
            offset: bv.bv_offset,
            _p: PhantomData,
        };
        let r = f(i, &mut block);
        // SAFETY: `base` was mapped above; `block` (which borrowed it) is not used again.
        unsafe { bindings::dm_rust_kunmap_local(base.cast()) };
        r.map_err(BlockError::Callback)?;
        // SAFETY: advancing stays within the bio's data (`i < n`).
        unsafe { bindings::dm_rust_bio_advance_iter(bio, &mut iter, block_size) };
    }
    Ok(())
}

/// Takes `bio` over for [`Target::bio_work`](super::Target::bio_work): device-mapper is told the
/// bio was submitted, and a work item on the target's workqueue (in the bio's per-bio data) runs
/// the target's `bio_work` and completes the bio with the status it returns.
///
/// # Safety
///
/// `ti` must be a constructed target of type `T` with `per_io_data_size == PER_IO_SIZE`, and
/// `bio` a bio device-mapper handed to its `map`, about to be returned as `DM_MAPIO_SUBMITTED`.
pub(crate) unsafe fn take_over<T: Target>(ti: *mut bindings::dm_target, bio: *mut bindings::bio) {
    // SAFETY: the caller guarantees the per-bio data is ours and `PER_IO_SIZE` bytes long, that
    // the target is constructed (so `Ti::from_raw`'s contract holds for the call) and that the
    // bio is ours until we complete it.
    unsafe {
        let hdr = bindings::dm_per_bio_data(bio, PER_IO_SIZE as usize).cast::<IoHeader>();
        (*hdr).ti = ti;
        (*hdr).orig_end_io = None;
        (*hdr).orig_private = core::ptr::null_mut();
        (*hdr).iter = (*bio).bi_iter;
        // The per-bio data is not initialised: write, do not assign (nothing to drop).
        (&raw mut (*hdr).pending).write(AtomicU32::new(1));
        (&raw mut (*hdr).status).write(AtomicU8::new(bindings::DM_RUST_BLK_STS_OK));
        let t = Ti::<T>::from_raw(ti);
        let pool = t.holder().clones.as_ref().map_or(core::ptr::null_mut(), |c| c.pages.as_raw());
        (&raw mut (*hdr).clone_pool).write(pool);
        match &t.holder().wq {
            Some(wq) => {
                bindings::dm_rust_init_taken_work(&raw mut (*hdr).work, Some(taken_work::<T>));
                bindings::dm_rust_queue_work(wq.as_raw(), &raw mut (*hdr).work);
            }
            // Unreachable (`Adapter::ctr` asserts a queue for `bio_work` targets); fail the
            // bio rather than leave it hanging.
            None => {
                (*bio).bi_status = bindings::DM_RUST_BLK_STS_IOERR;
                bindings::bio_endio(bio);
            }
        }
    }
}

/// Process context: the target finishes a bio it took over; the bio completes once its write
/// clones in flight, if any, have completed too.
unsafe extern "C" fn taken_work<T: Target>(w: *mut bindings::work_struct) {
    // SAFETY: `w` is the first field of an `IoHeader` (`repr(C)`) in a taken-over bio's per-bio
    // data, queued by `take_over`; the bio is in flight until its last reference goes (the work
    // item's, given up below, is one), so its target is alive (device-mapper waits for in-flight
    // bios before destroying a target); work items run in process context.
    unsafe {
        let hdr = w.cast::<IoHeader>();
        let ti = Ti::<T>::from_raw((*hdr).ti);
        let bio = bindings::dm_bio_from_per_bio_data(hdr.cast(), PER_IO_SIZE as usize);
        let clones = ti
            .holder()
            .clones
            .as_ref()
            .map_or(core::ptr::null(), |c| c as *const ClonePools);
        let mut io = TakenIo {
            bio,
            hdr,
            clones,
            _p: PhantomData,
        };
        let s = MaySleep::new();
        let status = ti.holder().target.bio_work(ti, &mut io, &s);
        put_taken(hdr, status);
    }
}

/// Gives up one reference of a taken-over bio ([`IoHeader::pending`]), recording `status` if it
/// is the first error; the last reference completes the bio with the status recorded. Any
/// context.
///
/// # Safety
///
/// `hdr` is the header of a bio taken over by [`take_over`], and the caller holds one of its
/// references, which it gives up here (neither it nor `hdr` is used by the caller afterwards).
pub(crate) unsafe fn put_taken(hdr: *mut IoHeader, status: u8) {
    // SAFETY: the caller's reference keeps the bio, and so its per-bio data, from completing
    // until the `fetch_sub` below; only the caller that takes the count to zero uses them after
    // it, and completes the bio last.
    unsafe {
        if status != bindings::DM_RUST_BLK_STS_OK {
            let _ = (*hdr).status.compare_exchange(
                bindings::DM_RUST_BLK_STS_OK,
                status,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        if (*hdr).pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let bio = bindings::dm_bio_from_per_bio_data(hdr.cast(), PER_IO_SIZE as usize);
            (*bio).bi_status = (*hdr).status.load(Ordering::Acquire);
            bindings::bio_endio(bio);
        }
    }
}

/// A bio that `map` took over ([`MapResult::CompleteInWork`](super::MapResult)), in process
/// context; it completes after `bio_work` (and after the write clones `bio_work` submitted, if
/// any), with the status `bio_work` returns, or the first error of a clone. Its data is the
/// submitter's: readable as [`IoBlock`]s, and never to be changed for a write (write a clone of
/// it, [`TakenIo::write_clone`]).
pub struct TakenIo<'a> {
    pub(crate) bio: *mut bindings::bio,
    pub(crate) hdr: *mut IoHeader,
    /// The target's clone pools (in the adapter's holder), null if it has none.
    pub(crate) clones: *const ClonePools,
    _p: PhantomData<&'a mut bindings::bio>,
}

impl TakenIo<'_> {
    /// First sector of the I/O in the mapped device.
    pub fn sector(&self) -> u64 {
        // SAFETY: the header lives in the bio's per-bio data, valid until the bio completes.
        unsafe { (*self.hdr).iter.bi_sector }
    }

    /// Size of the I/O in bytes.
    pub fn size(&self) -> u32 {
        // SAFETY: as in `sector`.
        unsafe { (*self.hdr).iter.bi_size }
    }

    pub(crate) fn iter(&self) -> bindings::bvec_iter {
        // SAFETY: as in `sector`.
        unsafe { (*self.hdr).iter }
    }

    pub(crate) fn opf(&self) -> bindings::blk_opf_t {
        // SAFETY: the bio is ours until it completes.
        unsafe { (*self.bio).bi_opf }
    }
}
