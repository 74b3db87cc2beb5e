// SPDX-License-Identifier: GPL-2.0

//! Underlying devices and queue limits.

use core::ptr::NonNull;

use kernel::ffi::{c_int, c_void};
use kernel::prelude::*;

use crate::bindings;

/// An underlying device a target uses: a reference to its open block device.
///
/// Made by [`TargetCtx::get_device`](super::TargetCtx::get_device). Device-mapper's own handle
/// (`struct dm_dev`) stays with the adapter, which releases it (`dm_put_device`) after the
/// target's state is dropped. A `Device` holds a reference of its own to the block device's open
/// file (`bdev_file`), so it is valid wherever it ends up (moved into deferred work, kept past
/// its target) and may be dropped in any context: `fput` defers the final release itself.
pub struct Device {
    file: NonNull<bindings::file>,
    bdev: NonNull<bindings::block_device>,
    name: [u8; 16],
}

// SAFETY: the file reference may be used and dropped from any thread (`fput` is safe in any
// context); the block device it keeps open is made to be shared.
unsafe impl Send for Device {}
// SAFETY: `&Device` only reads immutable data: the name, and the block device's size and limits.
unsafe impl Sync for Device {}

impl Device {
    /// # Safety
    ///
    /// `dev` must be an open `dm_dev` (returned by `dm_get_device` and not yet put) for the
    /// duration of this call.
    pub(crate) unsafe fn from_dm_dev(dev: *mut bindings::dm_dev) -> Self {
        // SAFETY: the caller guarantees `dev` is open, so it and its file are valid; `get_file` takes a
        // reference of our own that `Drop` gives back.
        let (file, bdev, name) = unsafe {
            (
                bindings::dm_rust_get_file((*dev).bdev_file),
                (*dev).bdev,
                (*dev).name,
            )
        };
        // `name` is a NUL-terminated `char[16]`.
        let name = name.map(|c| c as u8);
        // SAFETY: an open `dm_dev` always has its file and block device (`dm_get_device` fails
        // otherwise).
        let (file, bdev) = unsafe { (NonNull::new_unchecked(file), NonNull::new_unchecked(bdev)) };
        Self { file, bdev, name }
    }

    /// Another handle to the same device.
    pub fn try_clone(&self) -> Self {
        // SAFETY: `self.file` is a file we hold a reference to (type invariant).
        unsafe { bindings::dm_rust_get_file(self.file.as_ptr()) };
        Self {
            file: self.file,
            bdev: self.bdev,
            name: self.name,
        }
    }

    pub(crate) fn file(&self) -> *mut bindings::file {
        self.file.as_ptr()
    }

    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        self.bdev.as_ptr()
    }

    /// The device's name as device-mapper prints it in tables: `major:minor`.
    pub fn name(&self) -> &str {
        let n = self
            .name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }

    /// Size of the device in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        // SAFETY: the block device stays valid while we hold its open file (type invariant).
        unsafe { bindings::dm_rust_bdev_nr_sectors(self.bdev()) }
    }

    /// Logical block size of the device in bytes.
    pub fn logical_block_size(&self) -> u32 {
        // SAFETY: the block device stays valid while we hold its open file (type invariant,
        // established by `from_dm_dev` and `try_clone`).
        unsafe { bindings::dm_rust_bdev_logical_block_size(self.bdev()) }
    }
}

impl Device {
    /// Reads `len` bytes from `sector` into the start of `buf` and waits (may sleep). `buf` is
    /// kmalloc memory (`KVec`), in the kernel's direct map as the block layer needs; `len` must be
    /// a multiple of the logical block size.
    pub fn read_sync(
        &self,
        _s: &super::MaySleep<'_>,
        sector: u64,
        buf: &mut KVec<u8>,
        len: usize,
    ) -> Result {
        if len > buf.len() {
            return Err(EINVAL);
        }
        // SAFETY: the block device is open (type invariant); the first `len` bytes of `buf`
        // (checked) are kmalloc memory we own exclusively for the call, which waits for the I/O.
        kernel::error::to_result(unsafe {
            bindings::bdev_rw_virt(
                self.bdev(),
                sector,
                buf.as_mut_ptr().cast(),
                len,
                bindings::req_op_REQ_OP_READ,
            )
        })
    }

    /// Writes the first `len` bytes of `buf` at `sector` with FUA (on stable storage when this
    /// returns) and waits (may sleep). `buf` is kmalloc memory; `len` a multiple of the logical
    /// block size.
    pub fn write_sync_fua(
        &self,
        _s: &super::MaySleep<'_>,
        sector: u64,
        buf: &mut KVec<u8>,
        len: usize,
    ) -> Result {
        if len > buf.len() {
            return Err(EINVAL);
        }
        // SAFETY: the block device is open (type invariant); the first `len` bytes of `buf`
        // (checked) are kmalloc memory we own for the call, which waits for the I/O. The block
        // layer only reads them.
        kernel::error::to_result(unsafe {
            bindings::bdev_rw_virt(
                self.bdev(),
                sector,
                buf.as_mut_ptr().cast(),
                len,
                bindings::req_op_REQ_OP_WRITE
                    | bindings::DM_RUST_REQ_SYNC
                    | bindings::DM_RUST_REQ_FUA,
            )
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: we hold a reference to `file` (`from_dm_dev`, `try_clone`); `fput` may be
        // called in any context.
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}

/// Device-mapper's callout for `iterate_devices`.
pub struct DeviceVisitor<'a> {
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
    /// The target's own open devices (the adapter's), which the callout receives.
    devices: &'a [*mut bindings::dm_dev],
}

impl<'a> DeviceVisitor<'a> {
    /// # Safety
    ///
    /// `ti`, `f` and `data` must be the arguments of an `iterate_devices` call in progress, and
    /// `devices` the devices opened for `ti`, open for `'a`.
    pub(crate) unsafe fn new(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
        devices: &'a [*mut bindings::dm_dev],
    ) -> Self {
        Self {
            ti,
            f,
            data,
            devices,
        }
    }

    /// Reports that the target uses `len` sectors of `dev` from sector `start`. A non-zero
    /// result stops the iteration and must be returned from `iterate_devices`. A device the
    /// target did not open itself is not reported (`-EINVAL`).
    pub fn visit(&mut self, dev: &Device, start: u64, len: u64) -> c_int {
        // The callout gets the target's own `dm_dev`, found by the file it shares with `dev`.
        let file_of = |d: *mut bindings::dm_dev| {
            // SAFETY: `devices` are open for the call (`new`).
            unsafe { (*d).bdev_file }
        };
        let Some(&d) = self.devices.iter().find(|&&d| file_of(d) == dev.file()) else {
            return EINVAL.to_errno();
        };
        match self.f {
            // SAFETY: `f` is device-mapper's callout with its `data` (`new`); `d` is open.
            Some(f) => unsafe { f(self.ti, d, start, len, self.data) },
            None => 0,
        }
    }
}

/// The queue limits of the mapped device, while device-mapper computes them.
pub struct QueueLimits<'a> {
    l: &'a mut bindings::queue_limits,
}

impl QueueLimits<'_> {
    /// # Safety
    ///
    /// `l` must be valid and not otherwise accessed for the lifetime of the result.
    pub(crate) unsafe fn from_raw(l: *mut bindings::queue_limits) -> Self {
        // SAFETY: the caller guarantees `l` is valid and not otherwise accessed for `'a`.
        let l = unsafe { &mut *l };
        Self { l }
    }

    /// Current logical block size.
    pub fn logical_block_size(&self) -> u32 {
        self.l.logical_block_size
    }

    /// Raises the logical, physical and minimum I/O sizes to at least `size`, and requires
    /// buffers aligned to it, so that every block of an I/O lies within one page segment.
    pub fn set_block_size(&mut self, size: u32) {
        let l = &mut *self.l;
        l.logical_block_size = l.logical_block_size.max(size);
        l.physical_block_size = l.physical_block_size.max(size);
        l.io_min = l.io_min.max(size);
        l.dma_alignment = l.dma_alignment.max(size - 1);
    }

    /// Sets the granularity of discards to `size` bytes (a target that discards whole blocks).
    pub fn set_discard_granularity(&mut self, size: u32) {
        self.l.discard_granularity = size;
    }

    /// Limits each segment of a bio to `size` bytes (targets whose clones have pages of their
    /// own, which are not as contiguous as the submitter's, as dm-crypt).
    pub fn set_max_segment_size(&mut self, size: u32) {
        self.l.max_segment_size = size;
    }

    /// Gives the mapped device an integrity profile without a checksum: `tag_bytes` of metadata
    /// for each `2^interval_exp`-byte block, which the layer above fills (dm-crypt's
    /// authenticated modes) and the target stores. Bios then carry the tags as their integrity
    /// payload ([`Bio::integrity_size`](super::Bio::integrity_size)). Only for a target type
    /// with `DM_TARGET_INTEGRITY` in its features (device-mapper keeps the profile only then).
    pub fn set_integrity(&mut self, tag_bytes: u8, interval_exp: u8) {
        let bi = &mut self.l.integrity;
        bi.flags = 0;
        bi.csum_type = bindings::blk_integrity_checksum_BLK_INTEGRITY_CSUM_NONE;
        bi.metadata_size = tag_bytes;
        bi.tag_size = tag_bytes;
        bi.pi_offset = 0;
        bi.pi_tuple_size = 0;
        bi.interval_exp = interval_exp;
    }

    /// Lets bios carry integrity payloads of any number of segments (a target that copies the
    /// payload rather than passing it to a device).
    pub fn set_max_integrity_segments_unlimited(&mut self) {
        self.l.max_integrity_segments = u16::MAX;
    }
}
