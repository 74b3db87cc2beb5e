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
}
