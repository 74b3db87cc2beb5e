// SPDX-License-Identifier: GPL-2.0

//! dm-bufio: a cache of metadata blocks of a device, shared by the I/O of a target.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use kernel::error::from_err_ptr;
use kernel::prelude::*;

use super::context::MaySleep;
use super::device::Device;
use crate::bindings;

/// A dm-bufio client over one device, which it owns. Each cached block carries a "verified" flag
/// that starts cleared when the block is read and stays set while it is cached.
pub struct BufioClient {
    client: NonNull<bindings::dm_bufio_client>,
    block_size: usize,
    /// Buffers currently held (`Buffer`s alive): `reset` must not run while any is.
    held: AtomicUsize,
    // Dropped after `client` (declared after it): the client holds the device's bdev.
    dev: Device,
}

// SAFETY: dm-bufio clients lock internally and may be used from any thread.
unsafe impl Send for BufioClient {}
// SAFETY: dm-bufio clients lock internally; `&BufioClient` reads, prefetches and releases
// through the client's own locking.
unsafe impl Sync for BufioClient {}

/// Initialises the per-buffer flag of a freshly created buffer.
unsafe extern "C" fn alloc_callback(buf: *mut bindings::dm_buffer) {
    // SAFETY: dm-bufio calls this with a new buffer whose auxiliary area is one byte (`new`).
    unsafe { *bindings::dm_bufio_get_aux_data(buf).cast::<u8>() = 0 };
}

impl BufioClient {
    /// Creates a client caching `block_size`-byte blocks of `dev`, keeping `reserved` buffers
    /// for forward progress under memory pressure.
    pub fn new(dev: Device, block_size: u32, reserved: u32) -> Result<Self> {
        // SAFETY: `dev` is open and moves into the client, so it outlives it.
        let c = unsafe {
            bindings::dm_bufio_client_create(
                dev.bdev(),
                block_size,
                reserved,
                1,
                Some(alloc_callback),
                None,
                0,
            )
        };
        let c = from_err_ptr(c)?;
        Ok(Self {
            client: NonNull::new(c).ok_or(ENOMEM)?,
            block_size: block_size as usize,
            held: AtomicUsize::new(0),
            dev,
        })
    }

    fn raw(&self) -> *mut bindings::dm_bufio_client {
        self.client.as_ptr()
    }

    /// The device the blocks come from.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Size of the device in blocks.
    pub fn device_blocks(&self) -> u64 {
        // SAFETY: the client is live.
        unsafe { bindings::dm_bufio_get_device_size(self.raw()) }
    }

    /// Reads block `block` (from the cache or the device; may sleep).
    pub fn read(&self, _s: &MaySleep<'_>, block: u64) -> Result<Buffer<'_>> {
        let mut buf = core::ptr::null_mut();
        self.held.fetch_add(1, Ordering::Acquire);
        // SAFETY: the client is live; `buf` receives the buffer on success; the caller may sleep.
        let data = unsafe { bindings::dm_bufio_read(self.raw(), block, &mut buf) };
        let data = match from_err_ptr(data) {
            Ok(d) => d,
            Err(e) => {
                self.held.fetch_sub(1, Ordering::Release);
                return Err(e);
            }
        };
        Ok(Buffer {
            buf,
            data: data.cast(),
            len: self.block_size,
            client: self,
        })
    }

    /// Starts reading `count` blocks from `block` into the cache, without waiting.
    pub fn prefetch(&self, _s: &MaySleep<'_>, block: u64, count: u32) {
        // SAFETY: the client is live; out-of-range blocks fail their read, which is harmless.
        unsafe { bindings::dm_bufio_prefetch(self.raw(), block, count) };
    }

    /// Drops block `block` from the cache (it must not be held).
    pub fn forget(&self, _s: &MaySleep<'_>, block: u64) {
        // SAFETY: the client is live; forgetting an uncached block does nothing.
        unsafe { bindings::dm_bufio_forget(self.raw(), block) };
    }

    /// Numbers blocks from sector `sectors` of the device (block 0 starts there).
    pub fn set_sector_offset(&mut self, sectors: u64) {
        // SAFETY: the client is live; `&mut self` means no buffer of it is held.
        unsafe { bindings::dm_bufio_set_sector_offset(self.raw(), sectors) };
    }

    /// Reads block `block` to change it (from the cache or the device; may sleep). The client
    /// is borrowed exclusively while the buffer is held, so nobody else reads or writes the
    /// cached block through it meanwhile.
    pub fn read_mut(&mut self, _s: &MaySleep<'_>, block: u64) -> Result<BufferMut<'_>> {
        let mut buf = core::ptr::null_mut();
        // SAFETY: the client is live; `buf` receives the buffer on success; the caller may sleep.
        let data = unsafe { bindings::dm_bufio_read(self.raw(), block, &mut buf) };
        let data = from_err_ptr(data)?;
        Ok(BufferMut {
            buf,
            data: data.cast(),
            len: self.block_size,
            _client: core::marker::PhantomData,
        })
    }

    /// Writes every dirty block and waits for the writes, then flushes the device's cache
    /// (`dm_bufio_write_dirty_buffers` always ends with a flush).
    pub fn write_dirty(&self, _s: &MaySleep<'_>) -> Result {
        // SAFETY: the client is live; the caller may sleep.
        kernel::error::to_result(unsafe { bindings::dm_bufio_write_dirty_buffers(self.raw()) })
    }

    /// Drops every clean cached block (after a suspend, the device may have changed). Refused
    /// with `EBUSY` while a [`Buffer`] of this client is held: dm-bufio cannot drop held buffers.
    pub fn reset(&self, _s: &MaySleep<'_>) -> Result {
        if self.held.load(Ordering::Acquire) != 0 {
            return Err(EBUSY);
        }
        // SAFETY: the client is live, no buffer of it is held, and the caller may sleep.
        unsafe { bindings::dm_bufio_client_reset(self.raw()) };
        Ok(())
    }
}

impl Drop for BufioClient {
    fn drop(&mut self) {
        // SAFETY: the client is live, and no `Buffer` borrows it any more.
        unsafe { bindings::dm_bufio_client_destroy(self.raw()) };
    }
}

/// A block held in the cache; released when dropped.
pub struct Buffer<'a> {
    buf: *mut bindings::dm_buffer,
    data: *const u8,
    len: usize,
    client: &'a BufioClient,
}

impl Buffer<'_> {
    /// The block's bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: a held buffer's data is `len` bytes that only change while nobody holds it.
        unsafe { core::slice::from_raw_parts(self.data, self.len) }
    }

    fn flag(&self) -> &AtomicU8 {
        // The auxiliary area is the one byte `alloc_callback` initialised, as long-lived as the
        // buffer. SAFETY: valid, aligned (u8) and only ever accessed atomically.
        unsafe { AtomicU8::from_ptr(bindings::dm_bufio_get_aux_data(self.buf).cast()) }
    }

    /// Whether the block was marked verified since it entered the cache.
    pub fn verified(&self) -> bool {
        self.flag().load(Ordering::Acquire) != 0
    }

    /// Marks the block verified for as long as it stays cached.
    pub fn set_verified(&self) {
        self.flag().store(1, Ordering::Release);
    }
}

/// A block held in the cache to be changed; released when dropped. It borrows its client
/// exclusively ([`BufioClient::read_mut`]).
pub struct BufferMut<'a> {
    buf: *mut bindings::dm_buffer,
    data: *mut u8,
    len: usize,
    _client: core::marker::PhantomData<&'a mut BufioClient>,
}

impl BufferMut<'_> {
    /// The block's bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: a held buffer's data is `len` bytes; only this holder changes it (the client
        // is borrowed exclusively), and not while the slice is borrowed (`&self`).
        unsafe { core::slice::from_raw_parts(self.data, self.len) }
    }

    /// Copies `src` into the block at byte `offset`; `EINVAL` if it does not fit. dm-bufio may
    /// be writing the block back meanwhile (it only reads it then, and a block changed during
    /// its write stays dirty), hence a copy through the C `memcpy`, not a Rust slice.
    pub fn copy_in(&mut self, offset: usize, src: &[u8]) -> Result {
        let end = offset.checked_add(src.len()).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        // SAFETY: `offset..end` lies within the buffer's `len` bytes (checked); `src` is our own
        // memory, not the buffer's (no `&mut` to it can exist while `self` is borrowed mutably).
        unsafe { bindings::memcpy(self.data.add(offset).cast(), src.as_ptr().cast(), src.len()) };
        Ok(())
    }

    /// Marks the block dirty: dm-bufio writes it back (at the latest on
    /// [`BufioClient::write_dirty`]).
    pub fn mark_dirty(&mut self) {
        // SAFETY: `buf` is held by us since `read_mut`.
        unsafe { bindings::dm_bufio_mark_buffer_dirty(self.buf) };
    }
}

impl Drop for BufferMut<'_> {
    fn drop(&mut self) {
        // SAFETY: `buf` is held by us since `read_mut`.
        unsafe { bindings::dm_bufio_release(self.buf) };
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        // SAFETY: `buf` is held by us since `read`.
        unsafe { bindings::dm_bufio_release(self.buf) };
        self.client.held.fetch_sub(1, Ordering::Release);
    }
}
