// SPDX-License-Identifier: GPL-2.0

//! Underlying devices and queue limits.

use core::marker::PhantomData;

use kernel::ffi::{c_int, c_void};
use kernel::prelude::*;

use crate::bindings;

/// An underlying device opened for a target (`struct dm_dev`), released when dropped.
pub struct Device {
    ti: *mut bindings::dm_target,
    dev: *mut bindings::dm_dev,
}

// SAFETY: a `dm_dev` is reference counted by device-mapper and may be used and released from any
// thread; the target it belongs to outlives the `Device` (see `Device::open`).
unsafe impl Send for Device {}
// SAFETY: `&Device` only reads the immutable fields of `dm_dev`.
unsafe impl Sync for Device {}

impl Device {
    /// Opens `path` for target `ti` with `mode`.
    ///
    /// # Safety
    ///
    /// `ti` must be a target under construction, and the `Device` must be dropped before the
    /// target is destroyed (devices live in the target's state, dropped by its destructor).
    pub(crate) unsafe fn open(
        ti: *mut bindings::dm_target,
        path: &[u8],
        mode: bindings::blk_mode_t,
    ) -> Result<Self> {
        let mut cpath = KVec::with_capacity(path.len() + 1, GFP_KERNEL)?;
        cpath.extend_from_slice(path, GFP_KERNEL)?;
        cpath.push(0, GFP_KERNEL)?;
        let mut dev = core::ptr::null_mut();
        // SAFETY: `cpath` is NUL-terminated; `ti` is valid per the contract above.
        let r = unsafe { bindings::dm_get_device(ti, cpath.as_ptr().cast(), mode, &mut dev) };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        Ok(Self { ti, dev })
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::dm_dev {
        self.dev
    }

    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: `dev` stays valid until `drop`.
        unsafe { (*self.dev).bdev }
    }

    /// The device's name as device-mapper prints it in tables: `major:minor`.
    pub fn name(&self) -> &str {
        // SAFETY: `name` is a NUL-terminated array filled in when the device was opened.
        let name = unsafe { CStr::from_char_ptr((*self.dev).name.as_ptr()) };
        name.to_str().unwrap_or("?")
    }

    /// Size of the device in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        // SAFETY: the block device stays valid while it is open.
        unsafe { bindings::dm_rust_bdev_nr_sectors(self.bdev()) }
    }

    /// Logical block size of the device in bytes.
    pub fn logical_block_size(&self) -> u32 {
        // SAFETY: as for `sectors`.
        unsafe { bindings::dm_rust_bdev_logical_block_size(self.bdev()) }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: `dev` was returned by `dm_get_device` for `ti`, which is still live (`open`).
        unsafe { bindings::dm_put_device(self.ti, self.dev) };
    }
}

/// Device-mapper's callout for `iterate_devices`.
pub struct DeviceVisitor<'a> {
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
    _p: PhantomData<&'a ()>,
}

impl DeviceVisitor<'_> {
    /// # Safety
    ///
    /// `ti`, `f` and `data` must be the arguments of an `iterate_devices` call in progress.
    pub(crate) unsafe fn new(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> Self {
        Self {
            ti,
            f,
            data,
            _p: PhantomData,
        }
    }

    /// Reports that the target uses `len` sectors of `dev` from sector `start`. A non-zero
    /// result stops the iteration and must be returned from `iterate_devices`.
    pub fn visit(&mut self, dev: &Device, start: u64, len: u64) -> c_int {
        match self.f {
            // SAFETY: `f` is device-mapper's callout with its `data`; `dev` is open.
            Some(f) => unsafe { f(self.ti, dev.as_raw(), start, len, self.data) },
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
        // SAFETY: by the contract above.
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
}
