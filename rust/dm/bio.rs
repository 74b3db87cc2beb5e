// SPDX-License-Identifier: GPL-2.0

//! Bios as a target sees them.

use kernel::types::Opaque;

use super::device::Device;
use super::target::Ti;
use crate::bindings;

/// The operation of a bio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read data.
    Read,
    /// Write data.
    Write,
    /// Flush the volatile write cache (an empty flush has no data).
    Flush,
    /// Discard sectors.
    Discard,
    /// Securely erase sectors.
    SecureErase,
    /// Write zeroes.
    WriteZeroes,
    /// Anything else (zone management, driver-private operations).
    Other,
}

impl Op {
    pub(crate) fn from_raw(op: bindings::req_op) -> Self {
        match op {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            bindings::req_op_REQ_OP_DISCARD => Op::Discard,
            bindings::req_op_REQ_OP_SECURE_ERASE => Op::SecureErase,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            _ => Op::Other,
        }
    }
}

/// A bio device-mapper handed to a target (a clone of the bio submitted to the mapped device).
///
/// A target sees the bio's position, size and flags and may redirect it; it never sees the data
/// as a slice (see [`IoBlock`](super::io::IoBlock) for why).
#[repr(transparent)]
pub struct Bio(Opaque<bindings::bio>);

impl Bio {
    /// # Safety
    ///
    /// `ptr` must point to a valid bio that the caller may use exclusively for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::bio) -> &'a mut Self {
        // SAFETY: `Bio` is a transparent wrapper; the caller guarantees validity and exclusivity.
        unsafe { &mut *ptr.cast() }
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::bio {
        self.0.get()
    }

    fn opf(&self) -> bindings::blk_opf_t {
        // SAFETY: the bio is valid (type invariant).
        unsafe { (*self.as_raw()).bi_opf }
    }

    /// First sector of the bio.
    pub fn sector(&self) -> u64 {
        // SAFETY: the bio is valid and ours to read (type invariant).
        unsafe { (*self.as_raw()).bi_iter.bi_sector }
    }

    /// Remaining size in bytes.
    pub fn size(&self) -> u32 {
        // SAFETY: the bio is valid and ours to read for `'a` (`from_raw`'s contract).
        unsafe { (*self.as_raw()).bi_iter.bi_size }
    }

    /// The bio's first sector relative to the start of target `ti`, or `None` for a bio that
    /// carries no data. Device-mapper sends empty flushes to every target of a table with sector
    /// 0, which lies before every target but the first: such a bio has no position to remap, only
    /// a device to go to. For a bio with data, device-mapper guarantees that it lies within the
    /// target (it splits bios at target boundaries), so the result is below `ti.len()`.
    pub fn target_sector<T: super::Target>(&self, ti: &Ti<T>) -> Option<u64> {
        if self.size() == 0 {
            return None;
        }
        self.sector().checked_sub(ti.begin())
    }

    /// Remaining size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        u64::from(self.size()) >> 9
    }

    /// The bio's operation.
    pub fn op(&self) -> Op {
        // SAFETY: the bio is valid (type invariant).
        Op::from_raw(unsafe { bindings::dm_rust_bio_op(self.as_raw()) })
    }

    /// Whether the bio asks for a cache flush before it (`REQ_PREFLUSH`).
    pub fn is_preflush(&self) -> bool {
        self.opf() & bindings::DM_RUST_REQ_PREFLUSH != 0
    }

    /// Whether the bio's data must reach stable storage before it completes (`REQ_FUA`).
    pub fn is_fua(&self) -> bool {
        self.opf() & bindings::DM_RUST_REQ_FUA != 0
    }

    /// Whether the bio is read-ahead (may fail without harm).
    pub fn is_readahead(&self) -> bool {
        self.opf() & bindings::DM_RUST_REQ_RAHEAD != 0
    }

    /// Sets the first sector.
    pub fn set_sector(&mut self, sector: u64) {
        // SAFETY: the bio is valid and ours to change before it is submitted (type invariant).
        unsafe { (*self.as_raw()).bi_iter.bi_sector = sector };
    }

    /// Sends the bio to `dev`.
    pub fn set_dev(&mut self, dev: &Device) {
        // SAFETY: the bio is ours to change; `dev` is open, so its block device is valid.
        unsafe { bindings::dm_rust_bio_set_dev(self.as_raw(), dev.bdev()) };
    }

    /// Sends the bio to `sector` of `dev`.
    pub fn remap(&mut self, dev: &Device, sector: u64) {
        self.set_dev(dev);
        self.set_sector(sector);
    }

    /// Size in bytes of the integrity metadata (per-block tags) the layer above attached to the
    /// bio (its integrity payload), or `None` without one. Only a target whose mapped device
    /// has an integrity profile ([`QueueLimits::set_integrity`](super::device::QueueLimits))
    /// gets bios with one; dm-crypt's authenticated modes are such a layer.
    pub fn integrity_size(&self) -> Option<u32> {
        // SAFETY: the bio is valid (type invariant); a payload it has lives as long as it does.
        let bip = unsafe { bindings::dm_rust_bio_integrity(self.as_raw()) };
        // SAFETY: a non-null payload is valid (see above).
        (!bip.is_null()).then(|| unsafe { (*bip).bip_iter.bi_size })
    }

    /// Copies bytes `[offset, offset + dst.len())` of the bio's integrity metadata into `dst`
    /// (a write's tags). `Err` if the bio has no integrity payload or it is shorter.
    pub fn copy_integrity_to(&self, offset: u32, dst: &mut [u8]) -> Result<(), ()> {
        let to = dst.as_mut_ptr();
        self.copy_integrity(offset, dst.len(), |p, at, n| {
            // SAFETY: `copy_integrity` hands out `n` mapped bytes of the payload at `p`, and
            // `at + n <= dst.len()`; `dst` is our memory and does not overlap the payload.
            unsafe { bindings::memcpy(to.add(at).cast(), p.cast(), n) };
        })
    }

    /// Overwrites bytes `[offset, offset + src.len())` of the bio's integrity metadata with
    /// `src` (a read's tags, before the read goes down). `Err` if the bio has no integrity
    /// payload or it is shorter.
    pub fn copy_integrity_from(&mut self, offset: u32, src: &[u8]) -> Result<(), ()> {
        let from = src.as_ptr();
        self.copy_integrity(offset, src.len(), |p, at, n| {
            // SAFETY: as in `copy_integrity_to`; the payload is the layer above's buffer for
            // this bio's tags, which it does not look at before the bio completes (`&mut self`:
            // the bio is not yet submitted).
            unsafe { bindings::memcpy(p.cast(), from.add(at).cast(), n) };
        })
    }

    /// Calls `f(ptr, at, n)` for each piece of bytes `[offset, offset + len)` of the integrity
    /// payload, mapped at `ptr` for the call, `at` bytes into the range.
    ///
    /// The payload's pages are the layer above's memory (with io_uring's metadata, user pages
    /// user space may change): they are only ever copied, never lent as a slice (as
    /// [`IoBlock`](super::io::IoBlock)).
    fn copy_integrity(
        &self,
        offset: u32,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result<(), ()> {
        // SAFETY: the bio is valid (type invariant).
        let bip = unsafe { bindings::dm_rust_bio_integrity(self.as_raw()) };
        if bip.is_null() {
            return Err(());
        }
        // A copy of the payload's position: the bio's own is not moved.
        // SAFETY: `bip` is the bio's valid payload (see above).
        let mut iter = unsafe { (*bip).bip_iter };
        let end = u64::from(offset) + len as u64;
        if end > u64::from(iter.bi_size) {
            return Err(());
        }
        // SAFETY: `offset <= bi_size` (checked above): advancing stays within the payload.
        unsafe { bindings::dm_rust_bip_advance_iter(bip, &mut iter, offset) };
        let mut at = 0;
        while at < len {
            // SAFETY: `iter` is within the payload and has `len - at > 0` bytes left (above).
            let bv = unsafe { bindings::dm_rust_bip_iter_bvec(bip, iter) };
            let n = (bv.bv_len as usize).min(len - at);
            // SAFETY: `bv` is a segment of the payload: its page is valid while the bio is, and
            // `bvec_iter_bvec` keeps a segment within one page; `kmap_local_page` maps it until
            // the matching `kunmap_local`.
            let base = unsafe { bindings::dm_rust_kmap_local_page(bv.bv_page) }.cast::<u8>();
            // SAFETY: `bv_offset + n <= PAGE_SIZE` (the segment lies in the mapped page).
            f(unsafe { base.add(bv.bv_offset as usize) }, at, n);
            // SAFETY: `base` was mapped above and is not used again.
            unsafe { bindings::dm_rust_kunmap_local(base.cast()) };
            // SAFETY: `n` bytes of the payload are left at `iter` (`n <= bv_len`).
            unsafe { bindings::dm_rust_bip_advance_iter(bip, &mut iter, n as u32) };
            at += n;
        }
        Ok(())
    }
}
