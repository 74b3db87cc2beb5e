// SPDX-License-Identifier: GPL-2.0

//! Writes through a clone with pages of the target's own.
//!
//! A target that transforms written data (encryption) must not change the submitter's pages:
//! they may be a page cache page that is being read at the same time, or user memory (direct
//! I/O). It takes the write over from `map` ([`MapResult::CompleteInWork`](super::MapResult)),
//! and in [`Target::bio_work`](super::Target::bio_work) writes it with
//! [`TakenIo::write_clone`]: clone bios whose pages come from the target's [`PagePool`] (a
//! mempool, so the write makes progress under memory pressure instead of failing or
//! deadlocking), filled block by block by the target from the original's data, each submitted
//! and waited for. The original completes (in the abstraction, after `bio_work`) with the
//! clones' status.
//!
//! Ownership: the clone bios and their pages are local to `write_clone`, which puts every bio and
//! gives back every page before returning, on every path; the original is the abstraction's and
//! always completes. A worker that waits for pages holds none (the first page of each clone is
//! the only one allocated with a sleeping allocation), so workers cannot starve each other of the
//! pool.

use core::marker::PhantomData;
use core::ptr::NonNull;

use kernel::prelude::*;

use super::context::MaySleep;
use super::device::Device;
use super::io::{self, BlockError, IoBlock, TakenIo};
use crate::bindings;

/// Most pages in one clone bio.
const MAX_CLONE_PAGES: usize = 64;

/// A mempool of single pages, for the data of clone bios.
pub struct PagePool(NonNull<bindings::mempool_t>);

// SAFETY: mempools lock themselves; pages may be taken and given back from any thread.
unsafe impl Send for PagePool {}
// SAFETY: as above.
unsafe impl Sync for PagePool {}

impl PagePool {
    /// A pool keeping `min` pages in reserve.
    pub fn new(min: i32) -> Result<Self> {
        // SAFETY: creating a page pool has no precondition.
        NonNull::new(unsafe { bindings::dm_rust_mempool_create_page_pool(min) })
            .map(Self)
            .ok_or(ENOMEM)
    }
}

impl Drop for PagePool {
    fn drop(&mut self) {
        // SAFETY: every page taken was given back (`write_clone` returns them all).
        unsafe { bindings::mempool_destroy(self.0.as_ptr()) };
    }
}

/// A bio set (`struct bio_set`) for clone bios: bios and their vectors from mempools.
pub struct BioSet(KBox<bindings::bio_set>);

// SAFETY: bio sets lock themselves; bios may be allocated and put from any thread.
unsafe impl Send for BioSet {}
// SAFETY: as above.
unsafe impl Sync for BioSet {}

impl BioSet {
    /// A bio set keeping `min` bios (with vectors) in reserve.
    pub fn new(min: u32) -> Result<Self> {
        // SAFETY: an all-zero `bio_set` is what `bioset_init` expects (as in a kzalloc'ed
        // structure).
        let mut bs = KBox::new(unsafe { core::mem::zeroed::<bindings::bio_set>() }, GFP_KERNEL)?;
        // SAFETY: `bs` is zeroed storage that never moves (boxed) until `bioset_exit` in `drop`.
        kernel::error::to_result(unsafe {
            bindings::bioset_init(&mut *bs, min, 0, bindings::DM_RUST_BIOSET_NEED_BVECS)
        })?;
        Ok(Self(bs))
    }

    fn as_raw(&self) -> *mut bindings::bio_set {
        (&raw const *self.0).cast_mut()
    }
}

impl Drop for BioSet {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; every bio of it was put (`write_clone`).
        unsafe { bindings::bioset_exit(&mut *self.0) };
    }
}

/// Why [`TakenIo::write_clone`] failed.
pub enum CloneError<E> {
    /// The fill callback failed.
    Fill(E),
    /// A block was not contiguous in memory, or the sizes do not fit pages.
    Unaligned,
    /// The device failed the write: the block layer's status.
    Io(u8),
}

/// The pages of one clone bio, given back to the pool when dropped.
struct ClonePages<'a> {
    pool: &'a PagePool,
    pages: [*mut bindings::page; MAX_CLONE_PAGES],
    n: usize,
}

impl Drop for ClonePages<'_> {
    fn drop(&mut self) {
        for &p in &self.pages[..self.n] {
            // SAFETY: each page came from this pool and no bio uses it any more (the clone was
            // waited for, or never submitted).
            unsafe { bindings::mempool_free(p.cast(), self.pool.0.as_ptr()) };
        }
    }
}

/// A clone bio, put when dropped.
struct CloneBio(NonNull<bindings::bio>);

impl Drop for CloneBio {
    fn drop(&mut self) {
        // SAFETY: the bio is ours: allocated by `write_clone`, and finished or never submitted.
        unsafe { bindings::bio_put(self.0.as_ptr()) };
    }
}

impl TakenIo<'_> {
    /// Writes the I/O's data, transformed, to `sector` of `dev` (a write of the same size and
    /// flags as the original), through clone bios with pages from `pool`: `fill(i, src, dst)`
    /// makes block `i` of `block_size` bytes of the clone (`dst`, the target's page) from the
    /// original's (`src`, never to be changed). Waits for each clone, so it may sleep.
    pub fn write_clone<E>(
        &self,
        dev: &Device,
        sector: u64,
        block_size: u32,
        pool: &PagePool,
        bios: &BioSet,
        _s: &MaySleep<'_>,
        mut fill: impl FnMut(u32, &IoBlock<'_>, &mut IoBlock<'_>) -> Result<(), E>,
    ) -> Result<(), CloneError<E>> {
        let page_size = bindings::DM_RUST_PAGE_SIZE as u32;
        let total = self.size();
        if block_size == 0
            || block_size > page_size
            || page_size % block_size != 0
            || total % block_size != 0
        {
            return Err(CloneError::Unaligned);
        }
        let mut src_iter = self.iter();
        let mut done = 0u32;
        let mut index = 0u32;
        while done < total {
            let remaining = total - done;
            let want = (remaining.div_ceil(page_size) as usize).min(MAX_CLONE_PAGES);
            // SAFETY: `bios` is live; `GFP_NOIO` sleeps (allowed by `_s`) on the set's mempool
            // rather than fail; `want <= BIO_MAX_VECS`. The device stays open while we hold it.
            let clone = unsafe {
                bindings::bio_alloc_bioset(
                    dev.bdev(),
                    want as u16,
                    self.opf(),
                    bindings::DM_RUST_GFP_NOIO,
                    bios.as_raw(),
                )
            };
            let clone = CloneBio(NonNull::new(clone).ok_or(CloneError::Io(
                bindings::DM_RUST_BLK_STS_IOERR,
            ))?);
            let mut pages = ClonePages {
                pool,
                pages: [core::ptr::null_mut(); MAX_CLONE_PAGES],
                n: 0,
            };
            let mut chunk = 0u32;
            while pages.n < want {
                // Only the first page may wait: a worker waiting holds no pages.
                let gfp = if pages.n == 0 {
                    bindings::DM_RUST_GFP_NOIO
                } else {
                    bindings::DM_RUST_GFP_NOWAIT
                };
                // SAFETY: the pool is live.
                let page = unsafe { bindings::dm_rust_mempool_alloc(pool.0.as_ptr(), gfp) }
                    .cast::<bindings::page>();
                if page.is_null() {
                    break;
                }
                pages.pages[pages.n] = page;
                pages.n += 1;
                let len = page_size.min(remaining - chunk);
                // SAFETY: the clone has room for `want` vectors; the page is ours until the
                // clone is finished.
                unsafe { bindings::__bio_add_page(clone.0.as_ptr(), page, len, 0) };
                chunk += len;
            }
            if chunk == 0 {
                return Err(CloneError::Io(bindings::DM_RUST_BLK_STS_IOERR));
            }
            // The original's blocks of this chunk, into the clone's pages.
            let mut sub = src_iter;
            sub.bi_size = chunk;
            let mut dst_off = 0u32;
            // SAFETY: the original is ours until it completes (after `bio_work`); `sub` lies
            // within its data. In the callback: the clone's pages are ours (from the pool),
            // each mapped with `kmap_local_page` for one block and unmapped before the next,
            // in the reverse order of the mappings; blocks divide pages, so each block lies
            // within its mapped page.
            let r = unsafe {
                io::for_each_block(self.bio, sub, block_size, |_, src| {
                    let page = pages.pages[(dst_off / page_size) as usize];
                    let offset = dst_off % page_size;
                    // The page is ours (from the pool) and mapped until `kunmap_local` below,
                    // after the block is last used.
                    let base = bindings::dm_rust_kmap_local_page(page).cast::<u8>();
                    let mut dst = IoBlock {
                        // `offset + block_size <= PAGE_SIZE` (blocks divide pages).
                        ptr: base.add(offset as usize),
                        len: block_size as usize,
                        page,
                        offset,
                        _p: PhantomData,
                    };
                    let r = fill(index, src, &mut dst);
                    // Mapped above, after `src`'s mapping, so unmapped first (local mappings
                    // nest); `dst` is not used again.
                    bindings::dm_rust_kunmap_local(base.cast());
                    index += 1;
                    dst_off += block_size;
                    r
                })
            };
            match r {
                Ok(()) => {}
                Err(BlockError::Unaligned) => return Err(CloneError::Unaligned),
                Err(BlockError::Callback(e)) => return Err(CloneError::Fill(e)),
            }
            // SAFETY: the clone is complete; `sector + done / 512` is where its data goes.
            let r = unsafe {
                (*clone.0.as_ptr()).bi_iter.bi_sector = sector + u64::from(done >> 9);
                bindings::submit_bio_wait(clone.0.as_ptr())
            };
            if r != 0 {
                // SAFETY: converting an errno has no precondition.
                return Err(CloneError::Io(unsafe { bindings::errno_to_blk_status(r) }));
            }
            drop(pages);
            drop(clone);
            // SAFETY: advancing the original's iterator by the chunk stays within its data.
            unsafe { bindings::dm_rust_bio_advance_iter(self.bio, &mut src_iter, chunk) };
            done += chunk;
        }
        Ok(())
    }
}
