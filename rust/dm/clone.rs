// SPDX-License-Identifier: GPL-2.0

//! Writes through a clone with pages of the target's own.
//!
//! A target that transforms written data (encryption) must not change the submitter's pages:
//! they may be a page cache page that is being read at the same time, or user memory (direct
//! I/O). It takes the write over from `map` ([`MapResult::CompleteInWork`](super::MapResult)),
//! and in [`Target::bio_work`](super::Target::bio_work) writes it with
//! [`TakenIo::write_clone`]: clone bios whose pages come from the target's [`PagePool`] (a
//! mempool, so the write makes progress under memory pressure instead of failing or
//! deadlocking), filled block by block by the target from the original's data. Each clone is
//! submitted as soon as it is filled, and the next one filled while the device writes it;
//! `write_clone` does not wait for them. The original completes (in the abstraction) once
//! `bio_work` has returned and every clone has completed, with the first error of either, so the
//! work item is free for the next bio while the device writes (as dm-crypt's `kcryptd`).
//!
//! Ownership: a clone bio and its pages are `write_clone`'s until it submits the clone, then the
//! clone's completion's (`clone_end_io`), which gives the pages back to the pool and puts the
//! bio, in any context, as dm-crypt's `crypt_endio` does; a clone never submitted is put and its
//! pages given back by `write_clone` itself. Each clone in flight holds a reference of the
//! original (in its per-bio data, [`io::put_taken`]), so the original, and with it the target and
//! its pool and bio set, outlives every clone. The original is the abstraction's and always
//! completes: the last of its references, the work item's or a clone's, completes it. A worker
//! that waits for pages holds none that it could give back itself: the first page of each clone
//! is the only one allocated with a sleeping allocation, and the pages of clones in flight come
//! back when the device completes them, whatever the workers do; so workers cannot starve each
//! other of the pool.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use kernel::ffi::c_void;
use kernel::prelude::*;

use super::context::MaySleep;
use super::device::Device;
use super::io::{self, BlockError, IoBlock, TakenIo};
use crate::bindings;

/// Most pages in one clone bio.
const MAX_CLONE_PAGES: usize = 64;

/// The pools of a target's write clones: pages for their data and bios. A constructor asks for
/// them ([`TargetCtx::make_clone_pools`](super::TargetCtx::make_clone_pools)); the adapter owns
/// them and drops them after the target's state, once device-mapper has finished every bio of
/// the target (the destructor's contract). Clones in flight outlive `bio_work`, but each holds a
/// reference of its original (in flight until the clone completes), so none outlives the pools.
pub struct ClonePools {
    pub(crate) pages: PagePool,
    bios: BioSet,
}

impl ClonePools {
    /// Pools keeping `pages` pages and `bios` bios (with vectors) in reserve.
    pub(crate) fn new(pages: i32, bios: u32) -> Result<Self> {
        Ok(Self {
            pages: PagePool::new(pages)?,
            bios: BioSet::new(bios)?,
        })
    }
}

/// A mempool of single pages, for the data of clone bios.
pub(crate) struct PagePool(NonNull<bindings::mempool_t>);

// SAFETY: mempools lock themselves; pages may be taken and given back from any thread.
unsafe impl Send for PagePool {}
// SAFETY: as above.
unsafe impl Sync for PagePool {}

impl PagePool {
    /// A pool keeping `min` pages in reserve.
    fn new(min: i32) -> Result<Self> {
        // SAFETY: creating a page pool has no precondition.
        NonNull::new(unsafe { bindings::dm_rust_mempool_create_page_pool(min) })
            .map(Self)
            .ok_or(ENOMEM)
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::mempool_t {
        self.0.as_ptr()
    }
}

impl Drop for PagePool {
    fn drop(&mut self) {
        // SAFETY: every page taken was given back: by `write_clone` for a clone it did not
        // submit, by `clone_end_io` for one it did; the pools are dropped (`ClonePools`) only once
        // no bio of the target, so no clone, is in flight.
        unsafe { bindings::mempool_destroy(self.0.as_ptr()) };
    }
}

/// A bio set (`struct bio_set`) for clone bios: bios and their vectors from mempools.
struct BioSet(KBox<bindings::bio_set>);

// SAFETY: bio sets lock themselves; bios may be allocated and put from any thread.
unsafe impl Send for BioSet {}
// SAFETY: as above.
unsafe impl Sync for BioSet {}

impl BioSet {
    /// A bio set keeping `min` bios (with vectors) in reserve.
    fn new(min: u32) -> Result<Self> {
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
        // SAFETY: initialised in `new`; every bio of it was put (`write_clone`, `clone_end_io`:
        // see `PagePool`'s `drop`).
        unsafe { bindings::bioset_exit(&mut *self.0) };
    }
}

/// Why [`TakenIo::write_clone`] failed.
pub enum CloneError<E> {
    /// The fill callback failed.
    Fill(E),
    /// A block was not contiguous in memory, or the sizes do not fit pages.
    Unaligned,
    /// The device failed the write, or no clone could be made: the block layer's status.
    Io(u8),
    /// The target made no clone pools
    /// ([`TargetCtx::make_clone_pools`](super::TargetCtx::make_clone_pools)).
    NoPools,
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
            // SAFETY: each page came from this pool and no bio uses it: the clone was never
            // submitted (once it is, its completion gives the pages back, and `n` is 0).
            unsafe { bindings::mempool_free(p.cast(), self.pool.0.as_ptr()) };
        }
    }
}

/// A clone finished (any context): give its pages back, put it, and give up its reference of
/// the original, which completes with the first error once the last reference is gone.
unsafe extern "C" fn clone_end_io(bio: *mut bindings::bio) {
    // SAFETY: `write_clone` submitted this clone with `bi_private` pointing to the original's
    // header, having taken a reference of the original for it: the original, its per-bio data
    // and its target with the target's clone pools (`clone_pool` is their page pool, set by
    // `io::take_over`) stay until `put_taken` below. The block layer is done with the clone: it
    // (from the pools' bio set) and its pages (whole pages of that pool, added by `write_clone`)
    // are ours to free.
    unsafe {
        let hdr = (*bio).bi_private.cast::<io::IoHeader>();
        let status = (*bio).bi_status;
        bindings::dm_rust_bio_free_pages(bio, (*hdr).clone_pool);
        bindings::bio_put(bio);
        io::put_taken(hdr, status);
    }
}

/// A clone bio, put when dropped (one that was never submitted).
struct CloneBio(NonNull<bindings::bio>);

impl Drop for CloneBio {
    fn drop(&mut self) {
        // SAFETY: the bio is ours: allocated by `write_clone` and never submitted (a submitted
        // clone is given up with `into_raw`).
        unsafe { bindings::bio_put(self.0.as_ptr()) };
    }
}

impl CloneBio {
    /// Gives the bio up (to its completion, `clone_end_io`).
    fn into_raw(self) -> *mut bindings::bio {
        let p = self.0.as_ptr();
        core::mem::forget(self);
        p
    }
}

impl TakenIo<'_> {
    /// Writes the I/O's data, transformed, to `sector` of `dev` (a write of the same size and
    /// flags as the original), through clone bios with pages of the target's clone pools:
    /// `fill(i, src, dst)` makes block `i` of `block_size` bytes of the clone (`dst`, the
    /// target's page) from the original's (`src`, never to be changed). Each clone is submitted
    /// as soon as it is filled, and the next filled while the device writes it. Returns once all
    /// are submitted (it may sleep for pages and bios), or at the first error of the fill or of
    /// an allocation; the original completes once `bio_work` has returned and every clone
    /// submitted has completed, with the first error of `bio_work` or of a clone. The pools are
    /// made by the constructor ([`TargetCtx::make_clone_pools`](super::TargetCtx::make_clone_pools)).
    pub fn write_clone<E>(
        &self,
        dev: &Device,
        sector: u64,
        block_size: u32,
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
        // SAFETY: `clones` is null or the target's pools, which the adapter keeps until the
        // target is destroyed, after this I/O (lent to `bio_work`, our caller) has completed.
        let Some(clones) = (unsafe { self.clones.as_ref() }) else {
            return Err(CloneError::NoPools);
        };
        let (pool, bios) = (&clones.pages, &clones.bios);
        let hdr = self.hdr;
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
                // Only the first page may wait: a worker waiting holds no pages but those of
                // its clones in flight, which their completions give back whatever it does.
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
            // SAFETY: the clone is complete; `sector + done / 512` is where its data goes. It
            // takes a reference of the original (the work item holds one, so the count is not
            // zero and the original not completed), which its completion (`clone_end_io`, with
            // the original's header as `bi_private`) gives up after freeing it.
            unsafe {
                let bio = clone.0.as_ptr();
                (*bio).bi_iter.bi_sector = sector + u64::from(done >> 9);
                (*bio).bi_private = hdr.cast::<c_void>();
                (*bio).bi_end_io = Some(clone_end_io);
                (*hdr).pending.fetch_add(1, Ordering::AcqRel);
            }
            // The pages and the bio now belong to the clone's completion.
            pages.n = 0;
            let bio = clone.into_raw();
            // SAFETY: `bio` is a complete clone for `dev`, which stays open while the target
            // exists (the original in flight keeps it); from here on only `clone_end_io` touches
            // it.
            unsafe { bindings::submit_bio_noacct(bio) };
            // SAFETY: advancing the original's iterator by the chunk stays within its data.
            unsafe { bindings::dm_rust_bio_advance_iter(self.bio, &mut src_iter, chunk) };
            done += chunk;
        }
        Ok(())
    }
}
