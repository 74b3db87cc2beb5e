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

use kernel::ffi::c_void;

use super::target::{state, Target, Ti};
use crate::bindings;

/// Per-bio state of a bio whose completion is deferred.
#[repr(C)]
pub(crate) struct IoHeader {
    work: bindings::work_struct,
    ti: *mut bindings::dm_target,
    orig_end_io: bindings::bio_end_io_t,
    orig_private: *mut c_void,
    /// The bio's position and size at submission (the lower device consumes `bi_iter`).
    iter: bindings::bvec_iter,
}

/// Bytes of per-bio data a target with deferred completions needs.
pub(crate) const PER_IO_SIZE: u32 = size_of::<IoHeader>() as u32;

/// Hooks `bio`'s completion so that [`Target::io_done`] runs first.
///
/// # Safety
///
/// `ti` must be a target of type `T` with `per_io_data_size == PER_IO_SIZE`, and `bio` a bio
/// device-mapper handed to its `map`, about to be returned as remapped.
pub(crate) unsafe fn hook<T: Target>(ti: *mut bindings::dm_target, bio: *mut bindings::bio) {
    // SAFETY: by the contract above the per-bio data is ours and `PER_IO_SIZE` bytes long.
    unsafe {
        let hdr = bindings::dm_per_bio_data(bio, PER_IO_SIZE as usize).cast::<IoHeader>();
        (*hdr).ti = ti;
        (*hdr).orig_end_io = (*bio).bi_end_io;
        (*hdr).orig_private = (*bio).bi_private;
        (*hdr).iter = (*bio).bi_iter;
        (*bio).bi_end_io = Some(end_io::<T>);
        (*bio).bi_private = hdr.cast();
    }
}

/// The lower device finished the bio (any context): queue the work.
unsafe extern "C" fn end_io<T: Target>(bio: *mut bindings::bio) {
    // `hook` set `bi_private` to the header in this bio's per-bio data.
    // SAFETY: so `hdr` is valid, and the target stays alive while one of its bios is in flight.
    unsafe {
        let hdr = (*bio).bi_private.cast::<IoHeader>();
        bindings::dm_rust_init_work(&mut (*hdr).work, Some(work::<T>));
        let wq = match state::<T>((*hdr).ti).io_queue() {
            Some(q) => q.as_raw(),
            None => bindings::system_wq,
        };
        bindings::dm_rust_queue_work(wq, &mut (*hdr).work);
    }
}

/// Process context: let the target finish the I/O, then complete the bio.
unsafe extern "C" fn work<T: Target>(w: *mut bindings::work_struct) {
    // SAFETY: `w` is the first field of an `IoHeader` (`repr(C)`), queued by `end_io`.
    unsafe {
        let hdr = w.cast::<IoHeader>();
        let ti = (*hdr).ti;
        let bio = bindings::dm_bio_from_per_bio_data(hdr.cast(), PER_IO_SIZE as usize);
        let mut io = DoneIo {
            bio,
            hdr,
            _p: PhantomData,
        };
        let status = state::<T>(ti).io_done(Ti::from_raw(ti), &mut io);
        (*bio).bi_end_io = (*hdr).orig_end_io;
        (*bio).bi_private = (*hdr).orig_private;
        (*bio).bi_status = status;
        bindings::bio_endio(bio);
    }
}

/// Why [`DoneIo::for_each_block`] stopped.
pub enum BlockError<E> {
    /// A block was not contiguous in memory (the queue limits should prevent it).
    Unaligned,
    /// The callback failed.
    Callback(E),
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
        // SAFETY: as above.
        unsafe { (*self.hdr).iter.bi_size }
    }

    /// Whether this is read-ahead (which may fail without harm).
    pub fn is_readahead(&self) -> bool {
        // SAFETY: the bio is ours.
        unsafe { (*self.bio).bi_opf & bindings::DM_RUST_REQ_RAHEAD != 0 }
    }

    /// Calls `f(i, block)` for each consecutive `block_size`-byte block of the I/O's data, in
    /// order; each block must lie within one page segment.
    pub fn for_each_block<E>(
        &mut self,
        block_size: u32,
        mut f: impl FnMut(u32, &mut [u8]) -> Result<(), E>,
    ) -> Result<(), BlockError<E>> {
        // SAFETY: the header is live with the bio.
        let mut iter = unsafe { (*self.hdr).iter };
        let n = self.size() / block_size;
        for i in 0..n {
            // SAFETY: `iter` stays within the bio's data, which the bio owns until it completes.
            let bv = unsafe { bindings::dm_rust_bio_iter_iovec(self.bio, iter) };
            if bv.bv_len < block_size {
                return Err(BlockError::Unaligned);
            }
            // The page is mapped for the call only; `bv_offset + block_size` stays in the page.
            // SAFETY: the segment's page is part of the bio, which is ours until it completes.
            let r = unsafe {
                let base = bindings::dm_rust_kmap_local_page(bv.bv_page).cast::<u8>();
                let block = core::slice::from_raw_parts_mut(
                    base.add(bv.bv_offset as usize),
                    block_size as usize,
                );
                let r = f(i, block);
                bindings::dm_rust_kunmap_local(base.cast());
                r
            };
            r.map_err(BlockError::Callback)?;
            // SAFETY: as above; advancing stays within the bio's size (`i < n`).
            unsafe { bindings::dm_rust_bio_advance_iter(self.bio, &mut iter, block_size) };
        }
        Ok(())
    }
}
