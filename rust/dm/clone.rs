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
//! submitted as soon as it is filled, and the next one filled while the device writes it; once
//! all are submitted, `write_clone` waits for them all. The original completes (in the
//! abstraction, after `bio_work`) with the clones' status (the first error, if any).
//!
//! Ownership: a clone bio and its pages are `write_clone`'s until it submits the clone, then the
//! clone's completion's (`clone_end_io`), which gives the pages back to the pool and puts the
//! bio, in any context, as dm-crypt's `crypt_endio` does; a clone never submitted is put and its
//! pages given back by `write_clone` itself. `write_clone` returns only once every clone it
//! submitted has completed, on every path, so nothing outlives its call, nor the pool and bio set
//! (the target's). The original is the abstraction's and always completes. A worker that waits
//! for pages holds none that it could give back itself: the first page of each clone is the only
//! one allocated with a sleeping allocation, and the pages of its clones in flight come back when
//! the device completes them, whatever the workers do; so workers cannot starve each other of
//! the pool.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use kernel::ffi::c_void;
use kernel::prelude::*;
use kernel::types::Opaque;

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
            // SAFETY: each page came from this pool and no bio uses it: the clone was never
            // submitted (once it is, its completion gives the pages back, and `n` is 0).
            unsafe { bindings::mempool_free(p.cast(), self.pool.0.as_ptr()) };
        }
    }
}

/// The clones of one [`TakenIo::write_clone`] in flight; each clone's `bi_private`. Pinned on
/// the stack of `write_clone`, which does not return before [`InFlight::wait`] has seen every
/// clone complete.
#[pin_data]
struct InFlight {
    /// Clones submitted and not completed yet, plus one for `write_clone` until it waits.
    pending: AtomicU32,
    /// The first error a clone completed with (`BLK_STS_OK` while none did).
    status: AtomicU8,
    /// The pool the clones' pages go back to (the target's, alive while `write_clone` runs).
    pool: NonNull<bindings::mempool_t>,
    /// Completed by the clone completion that brings `pending` to zero while `write_clone`
    /// waits.
    #[pin]
    done: Opaque<bindings::completion>,
}

impl InFlight {
    fn new(pool: &PagePool) -> impl PinInit<Self> {
        let pool = pool.0;
        pin_init!(Self {
            pending: AtomicU32::new(1),
            status: AtomicU8::new(bindings::DM_RUST_BLK_STS_OK),
            pool,
            done <- Opaque::ffi_init(|slot: *mut bindings::completion| {
                // SAFETY: `slot` is the uninitialised, pinned completion of this `InFlight`.
                unsafe { bindings::dm_rust_init_completion(slot) }
            }),
        })
    }

    /// Gives up `write_clone`'s count and waits until every clone submitted has completed.
    /// Called once, after the last submission.
    fn wait(&self, _s: &MaySleep<'_>) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            // A clone is still in flight: the completion of the last one completes `done`.
            // SAFETY: `done` was initialised by `new` and is pinned; waiting may sleep, which
            // `_s` allows.
            unsafe { bindings::wait_for_completion_io(self.done.get()) };
        }
    }
}

/// A clone finished (any context): record its status, give its pages back, put it, and wake
/// `write_clone` if it was the last.
unsafe extern "C" fn clone_end_io(bio: *mut bindings::bio) {
    // SAFETY: `write_clone` submitted this clone with `bi_private` pointing to its pinned
    // `InFlight`, counted in `pending`; `write_clone` does not return (and the `InFlight` stays)
    // until `pending` is zero, which is not before this clone's `fetch_sub` below, after which
    // `f` is used only by the completion that brought it to zero, while `write_clone` still waits
    // for `done`. The block layer is done with the clone: it and its pages (from `f.pool`, added
    // by `write_clone`, each a whole page of the pool) are ours to free.
    unsafe {
        let f = &*(*bio).bi_private.cast::<InFlight>();
        let status = (*bio).bi_status;
        if status != bindings::DM_RUST_BLK_STS_OK {
            let _ = f.status.compare_exchange(
                bindings::DM_RUST_BLK_STS_OK,
                status,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        bindings::dm_rust_bio_free_pages(bio, f.pool.as_ptr());
        bindings::bio_put(bio);
        if f.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            bindings::complete(f.done.get());
        }
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
    /// flags as the original), through clone bios with pages from `pool`: `fill(i, src, dst)`
    /// makes block `i` of `block_size` bytes of the clone (`dst`, the target's page) from the
    /// original's (`src`, never to be changed). Each clone is submitted once filled, the next
    /// filled while it is written; returns once all have completed (so it may sleep), with the
    /// first error of the fill, or else of the device.
    pub fn write_clone<E>(
        &self,
        dev: &Device,
        sector: u64,
        block_size: u32,
        pool: &PagePool,
        bios: &BioSet,
        s: &MaySleep<'_>,
        fill: impl FnMut(u32, &IoBlock<'_>, &mut IoBlock<'_>) -> Result<(), E>,
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
        pin_init::stack_pin_init!(let in_flight = InFlight::new(pool));
        // Only shared from here on: the clones' completions see it through `bi_private`.
        let in_flight: &InFlight = &in_flight;
        let r = self.submit_clones(dev, sector, block_size, pool, bios, in_flight, s, fill);
        // The clones submitted refer to `in_flight`: wait for them all, on every path.
        in_flight.wait(s);
        r?;
        match in_flight.status.load(Ordering::Acquire) {
            bindings::DM_RUST_BLK_STS_OK => Ok(()),
            status => Err(CloneError::Io(status)),
        }
    }

    /// `write_clone`'s loop: fills and submits the clones, each counted in `in_flight` (which
    /// must stay where it is until [`InFlight::wait`] returns); stops at the first error.
    #[allow(clippy::too_many_arguments)]
    fn submit_clones<E>(
        &self,
        dev: &Device,
        sector: u64,
        block_size: u32,
        pool: &PagePool,
        bios: &BioSet,
        in_flight: &InFlight,
        _s: &MaySleep<'_>,
        mut fill: impl FnMut(u32, &IoBlock<'_>, &mut IoBlock<'_>) -> Result<(), E>,
    ) -> Result<(), CloneError<E>> {
        let page_size = bindings::DM_RUST_PAGE_SIZE as u32;
        let total = self.size();
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
            // SAFETY: the clone is complete; `sector + done / 512` is where its data goes. Its
            // completion frees it (`clone_end_io`), with `in_flight` (pinned by `write_clone`,
            // which waits for the count taken here) as `bi_private`.
            unsafe {
                let bio = clone.0.as_ptr();
                (*bio).bi_iter.bi_sector = sector + u64::from(done >> 9);
                (*bio).bi_private = (in_flight as *const InFlight).cast_mut().cast::<c_void>();
                (*bio).bi_end_io = Some(clone_end_io);
            }
            in_flight.pending.fetch_add(1, Ordering::AcqRel);
            // The pages and the bio now belong to the clone's completion.
            pages.n = 0;
            let bio = clone.into_raw();
            // SAFETY: `bio` is a complete clone for `dev`, which stays open while the target
            // exists; from here on only `clone_end_io` touches it.
            unsafe { bindings::submit_bio_noacct(bio) };
            // SAFETY: advancing the original's iterator by the chunk stays within its data.
            unsafe { bindings::dm_rust_bio_advance_iter(self.bio, &mut src_iter, chunk) };
            done += chunk;
        }
        Ok(())
    }
}
