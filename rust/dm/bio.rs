// SPDX-License-Identifier: GPL-2.0

//! Bios as a target sees them.

use kernel::types::Opaque;

use super::device::Device;
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

/// A bio device-mapper handed to a target (a clone of the bio submitted to the mapped device).
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
        // SAFETY: as for `sector`.
        unsafe { (*self.as_raw()).bi_iter.bi_size }
    }

    /// Remaining size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        u64::from(self.size()) >> 9
    }

    /// The bio's operation.
    pub fn op(&self) -> Op {
        // SAFETY: the bio is valid (type invariant).
        match unsafe { bindings::dm_rust_bio_op(self.as_raw()) } {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            bindings::req_op_REQ_OP_DISCARD => Op::Discard,
            bindings::req_op_REQ_OP_SECURE_ERASE => Op::SecureErase,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            _ => Op::Other,
        }
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
