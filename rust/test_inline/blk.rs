// SPDX-License-Identifier: GPL-2.0

//! What the test RAM disk needs beyond `kernel::block::mq`, over the C glue of `glue.c`: a disk
//! added with a blk-crypto profile on its queue, a request's operation, position, segments and
//! encryption context, a synchronous skcipher, a kmalloc'd buffer it can work in. All the
//! `unsafe` code of the module is here; the driver (`test_inline.rs`) is safe Rust.

use core::ptr::NonNull;

use kernel::block::mq::{self, Operations, TagSet};
use kernel::error::{from_err_ptr, to_result};
use kernel::ffi::{c_int, c_uint, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::{ForeignOwnable, Opaque};

use crate::bindings;

/// The module parameter `no_profile` (declared in `glue.c`).
pub fn param_no_profile() -> bool {
    // SAFETY: a `bool` of this module, set by the module loader before init and read-only (0444)
    // afterwards, so nothing writes it while we read.
    unsafe { *(&raw const bindings::dmrti_param_no_profile) }
}

/// A blk-crypto profile: a few keyslots, AES-256-XTS with data units of 512 and 4096 bytes, DUNs
/// of 8 bytes, raw keys (`dmrti_profile_init` in `glue.c`). Its keyslot operations call the
/// [`Keyslots`] implementation of the structure it is embedded in (see [`keyslot_ops!`]).
#[pin_data(PinnedDrop)]
pub struct CryptoProfile {
    #[pin]
    pub(crate) inner: Opaque<bindings::blk_crypto_profile>,
}

// SAFETY: the profile is a C object that blk-crypto uses with its own locking (the profile's
// rwsem and spinlock); Rust only initialises it, passes its address and destroys it (`&mut`).
unsafe impl Send for CryptoProfile {}
// SAFETY: as for `Send`: nothing is reached through `&CryptoProfile` but its address.
unsafe impl Sync for CryptoProfile {}

impl CryptoProfile {
    /// A profile with `slots` keyslots.
    pub fn new(slots: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            // SAFETY: `p` points to the uninitialised, pinned profile; `blk_crypto_profile_init`
            // initialises all of it, or fails leaving nothing to free.
            inner <- Opaque::try_ffi_init(|p| to_result(unsafe { bindings::dmrti_profile_init(p, slots) })),
        })
    }

    fn as_raw(&self) -> *mut bindings::blk_crypto_profile {
        self.inner.get()
    }
}

#[pinned_drop]
impl PinnedDrop for CryptoProfile {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: initialised in `new`; the disk it was registered on was removed before (a
        // [`Disk`] holds the queue data that holds the profile, and drops it after removing the
        // disk), so no keyslot operation runs any more.
        unsafe { bindings::blk_crypto_profile_destroy(self.inner.get()) };
    }
}

/// Keyslot programming and eviction, called by blk-crypto (process context, under the profile's
/// lock; a slot is never reprogrammed or evicted while a request uses it).
pub trait Keyslots {
    /// Program `key` (raw bytes) for `mode` into `slot`.
    fn program(&self, key: &[u8], mode: bindings::blk_crypto_mode_num, slot: u32) -> Result;
    /// Forget the key of `slot`.
    fn evict(&self, slot: u32) -> Result;
}

/// Defines the keyslot callbacks `glue.c` forwards to, for a type `$t` implementing [`Keyslots`]
/// whose field `$field` is the only [`CryptoProfile`] of the module.
macro_rules! keyslot_ops {
    ($t:ty, $field:ident) => {
        /// Called by `glue.c`'s keyslot program operation.
        #[no_mangle]
        unsafe extern "C" fn dmrti_keyslot_program(
            profile: *mut $crate::bindings::blk_crypto_profile,
            key: *const u8,
            key_size: kernel::ffi::c_uint,
            mode: $crate::bindings::blk_crypto_mode_num,
            slot: kernel::ffi::c_uint,
        ) -> kernel::ffi::c_int {
            // SAFETY: every profile of this module is the `$field` of a `$t` (only `$t` holds a
            // `CryptoProfile`, and `keyslot_ops!` is invoked once), alive while its disk can
            // call this; `Opaque<T>` is `repr(transparent)`. `key` points to `key_size` bytes of
            // the `blk_crypto_key` blk-crypto holds during the call.
            let (owner, key) = unsafe {
                (
                    &*kernel::container_of!(
                        profile.cast::<kernel::types::Opaque<$crate::bindings::blk_crypto_profile>>(),
                        $t,
                        $field.inner
                    ),
                    core::slice::from_raw_parts(key, key_size as usize),
                )
            };
            match $crate::blk::Keyslots::program(owner, key, mode, slot) {
                Ok(()) => 0,
                Err(e) => e.to_errno(),
            }
        }

        /// Called by `glue.c`'s keyslot evict operation.
        #[no_mangle]
        unsafe extern "C" fn dmrti_keyslot_evict(
            profile: *mut $crate::bindings::blk_crypto_profile,
            slot: kernel::ffi::c_uint,
        ) -> kernel::ffi::c_int {
            // SAFETY: as in `dmrti_keyslot_program`.
            let owner = unsafe {
                &*kernel::container_of!(
                    profile.cast::<kernel::types::Opaque<$crate::bindings::blk_crypto_profile>>(),
                    $t,
                    $field.inner
                )
            };
            match $crate::blk::Keyslots::evict(owner, slot) {
                Ok(()) => 0,
                Err(e) => e.to_errno(),
            }
        }
    };
}
pub(crate) use keyslot_ops;

/// Queue data that may carry a crypto profile for its disk.
pub trait HasProfile {
    /// The profile to register on the disk's queue, if any.
    fn profile(&self) -> Option<&CryptoProfile>;
}

/// A disk `ramcrypt<index>` on a tag set of `kernel::block::mq`, with the crypto profile of its
/// queue data registered before it is added (so that `queue/crypto/` appears in sysfs and the
/// block layer sees the capability from the start). Removed when dropped.
pub struct Disk<T: Operations, Q: HasProfile + 'static> {
    gendisk: NonNull<bindings::gendisk>,
    _tagset: Arc<TagSet<T>>,
    _q: core::marker::PhantomData<Q>,
}

// SAFETY: a `Disk` offers nothing through `&self`, and is only used by `drop`, which may run on
// any thread (`del_gendisk`, `put_disk`, `blk_mq_free_tag_set` for the last tag set reference
// are process-context calls with no thread affinity); the queue data is `Send + Sync`.
unsafe impl<T: Operations, Q: HasProfile + Send + Sync> Send for Disk<T, Q> {}
// SAFETY: see `Send`: no method takes `&self`.
unsafe impl<T: Operations, Q: HasProfile + Send + Sync> Sync for Disk<T, Q> {}

impl<T: Operations<QueueData = Arc<Q>>, Q: HasProfile + Send + Sync + 'static> Disk<T, Q> {
    /// Allocates and adds the disk.
    pub fn new(tagset: Arc<TagSet<T>>, queue_data: Arc<Q>, index: i32, sectors: u64) -> Result<Self> {
        let profile = queue_data
            .profile()
            .map_or(core::ptr::null_mut(), CryptoProfile::as_raw);
        // `TagSet<T>` is `repr(transparent)` over `Opaque<blk_mq_tag_set>`
        // (rust/kernel/block/mq/tag_set.rs): its address is that of the C tag set.
        let set = core::ptr::from_ref::<TagSet<T>>(&tagset)
            .cast::<bindings::blk_mq_tag_set>()
            .cast_mut();
        let data = queue_data.into_foreign();
        // SAFETY: `set` is an initialised tag set kept alive by `_tagset` for the disk's life;
        // `data` is the queue data `kernel::block::mq` borrows as `T::QueueData` in its
        // callbacks, freed in `drop` after the disk is removed (or below on failure); `profile`
        // lives in that queue data, so it outlives the queue.
        let disk = from_err_ptr(unsafe { bindings::dmrti_add_disk(set, data.cast(), profile, index, sectors) });
        match disk {
            Ok(d) => Ok(Self {
                gendisk: NonNull::new(d).ok_or(EINVAL)?,
                _tagset: tagset,
                _q: core::marker::PhantomData,
            }),
            Err(e) => {
                // SAFETY: `data` came from `into_foreign` above and the failed disk is gone.
                drop(unsafe { Arc::<Q>::from_foreign(data) });
                Err(e)
            }
        }
    }
}

impl<T: Operations, Q: HasProfile + 'static> Drop for Disk<T, Q> {
    fn drop(&mut self) {
        // SAFETY: the disk was added in `new`; its queue data was made by `into_foreign` of an
        // `Arc<Q>` there (read before the disk is put). After `del_gendisk` no request runs and
        // no keyslot operation is called (the module cannot be unloaded while the disk is open:
        // `fops.owner`), so the queue data (and its profile) can go.
        unsafe {
            let data = (*(*self.gendisk.as_ptr()).queue).queuedata;
            bindings::dmrti_remove_disk(self.gendisk.as_ptr());
            drop(Arc::<Q>::from_foreign(data.cast()));
        }
    }
}

/// The operation of a request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read into the request's pages.
    Read,
    /// Write from them.
    Write,
    /// An empty flush.
    Flush,
    /// Anything else (the disk does not announce discards or write zeroes).
    Other,
}

/// An inline encryption context of a request, as blk-crypto set it up for the device.
#[derive(Clone, Copy)]
pub struct Crypt {
    /// The keyslot its key was programmed into.
    pub slot: u32,
    /// The DUN of the request's first data unit (8 bytes at most: the profile says so).
    pub dun: u64,
    /// The data unit size in bytes.
    pub data_unit_size: u32,
}

/// A started request of `kernel::block::mq`, seen through the C glue.
pub struct Rq<'a> {
    ptr: *mut bindings::request,
    _p: core::marker::PhantomData<&'a ()>,
}

impl<'a> Rq<'a> {
    /// The request behind `rq`.
    pub fn new<T: Operations>(rq: &'a mq::Request<T>) -> Self {
        Self {
            // `mq::Request<T>` is `repr(transparent)` over `Opaque<request>`
            // (rust/kernel/block/mq/request.rs): its address is that of the C request.
            ptr: core::ptr::from_ref(rq).cast::<bindings::request>().cast_mut(),
            _p: core::marker::PhantomData,
        }
    }

    /// Its operation.
    pub fn op(&self) -> Op {
        // SAFETY: `ptr` is a started request, alive for `'a`.
        match unsafe { bindings::dmrti_rq_op(self.ptr) } {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            _ => Op::Other,
        }
    }

    /// Its first sector.
    pub fn pos(&self) -> u64 {
        // SAFETY: as in `op`.
        unsafe { bindings::dmrti_rq_pos(self.ptr) }
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> usize {
        // SAFETY: as in `op`.
        unsafe { bindings::dmrti_rq_bytes(self.ptr) as usize }
    }

    /// Its encryption context, if it has one with a keyslot of this device.
    pub fn crypt(&self) -> Option<Crypt> {
        let (mut slot, mut dun, mut du) = (0, 0, 0);
        // SAFETY: as in `op`; the out-pointers are locals.
        unsafe { bindings::dmrti_rq_crypt(self.ptr, &mut slot, &mut dun, &mut du) }.then_some(Crypt {
            slot,
            dun,
            data_unit_size: du,
        })
    }

    /// Calls `f` for each segment of the request's data, in order; stops at the first error.
    pub fn for_each_segment<F: FnMut(&Segment) -> Result>(&self, mut f: F) -> Result {
        unsafe extern "C" fn one<F: FnMut(&Segment) -> Result>(
            ctx: *mut c_void,
            page: *mut bindings::page,
            offset: c_uint,
            len: c_uint,
        ) -> c_int {
            // SAFETY: `ctx` is the `&mut F` passed below, alive for the whole iteration.
            let f = unsafe { &mut *ctx.cast::<F>() };
            match f(&Segment { page, offset, len, _p: core::marker::PhantomData }) {
                Ok(()) => 0,
                Err(e) => e.to_errno(),
            }
        }
        // SAFETY: `ptr` as in `op`; `one::<F>` gets back `&mut f` as its context.
        to_result(unsafe {
            bindings::dmrti_rq_for_each_segment(self.ptr, Some(one::<F>), (&raw mut f).cast())
        })
    }
}

/// A segment of a request's data: `len` bytes of one page at `offset`. Its bytes can be another
/// thread's (direct I/O buffers), so they are only copied, through the C `memcpy`, never lent as
/// a slice.
pub struct Segment {
    page: *mut bindings::page,
    offset: c_uint,
    len: c_uint,
    _p: core::marker::PhantomData<*mut ()>,
}

impl Segment {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    fn check(&self, at: usize, n: usize) -> Result {
        match at.checked_add(n) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(EINVAL),
        }
    }

    /// Copies its bytes from `at` into `dst`.
    pub fn copy_to(&self, at: usize, dst: &mut [u8]) -> Result {
        self.check(at, dst.len())?;
        // SAFETY: the segment's page is part of a started request (alive during the iteration
        // that lent `&self`); the range is within the segment (checked); `dst` is ours.
        unsafe {
            bindings::dmrti_memcpy_from_page(dst.as_mut_ptr().cast(), self.page, self.offset as usize + at, dst.len())
        };
        Ok(())
    }

    /// Copies `src` into its bytes from `at`.
    pub fn copy_from(&self, at: usize, src: &[u8]) -> Result {
        self.check(at, src.len())?;
        // SAFETY: as in `copy_to`; the request's pages are the destination of a read.
        unsafe {
            bindings::dmrti_memcpy_to_page(self.page, self.offset as usize + at, src.as_ptr().cast(), src.len())
        };
        Ok(())
    }
}

/// A kmalloc'd buffer: linearly mapped memory, which a scatterlist can describe.
pub struct DmaBuf(KVec<u8>);

impl DmaBuf {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Result<Self> {
        Ok(Self(KVec::from_elem(0u8, len, GFP_KERNEL)?))
    }

    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Its bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// A synchronous skcipher of the crypto API with one request of its own. Running it needs
/// `&mut self`: one operation at a time.
pub struct Skcipher {
    tfm: NonNull<bindings::crypto_skcipher>,
    req: NonNull<bindings::skcipher_request>,
}

// SAFETY: the transform and request are plain heap objects of the crypto API, usable from any
// thread; `&mut self` serialises their use.
unsafe impl Send for Skcipher {}

impl Skcipher {
    /// The synchronous implementation of `name` (e.g. `c"xts(aes)"`). May sleep.
    pub fn new(name: &CStr) -> Result<Self> {
        // SAFETY: `name` is NUL-terminated.
        let tfm = from_err_ptr(unsafe { bindings::dmrti_alloc_sync_skcipher(name.as_char_ptr()) })?;
        let tfm = NonNull::new(tfm).ok_or(EINVAL)?;
        // SAFETY: `tfm` was just allocated.
        let req = unsafe { bindings::dmrti_skcipher_request_alloc(tfm.as_ptr()) };
        match NonNull::new(req) {
            Some(req) => Ok(Self { tfm, req }),
            None => {
                // SAFETY: allocated above, not used elsewhere.
                unsafe { bindings::dmrti_free_skcipher(tfm.as_ptr()) };
                Err(ENOMEM)
            }
        }
    }

    /// Sets the key.
    pub fn set_key(&mut self, key: &[u8]) -> Result {
        let len = u32::try_from(key.len()).map_err(|_| EINVAL)?;
        // SAFETY: `tfm` is valid; `key` is `len` readable bytes.
        to_result(unsafe { bindings::crypto_skcipher_setkey(self.tfm.as_ptr(), key.as_ptr(), len) })
    }

    /// Encrypts (or decrypts) the first `len` bytes of `buf` in place with `iv`. Does not sleep.
    pub fn crypt_in_place(&mut self, encrypt: bool, buf: &mut DmaBuf, len: usize, iv: &mut [u8; 16]) -> Result {
        let data = buf.as_mut_slice();
        if len > data.len() {
            return Err(EINVAL);
        }
        let len = u32::try_from(len).map_err(|_| EINVAL)?;
        // SAFETY: `req` belongs to `tfm` and `&mut self` makes this its only use; `buf` is
        // kmalloc'd memory (linearly mapped, as `sg_init_one` needs) of at least `len` bytes,
        // and `iv` 16 bytes (XTS's IV size), both exclusively ours for the call; the transform
        // is synchronous (allocated with `CRYPTO_ALG_ASYNC` masked), so it is done on return.
        to_result(unsafe {
            bindings::dmrti_skcipher_crypt_in_place(
                self.req.as_ptr(),
                encrypt,
                data.as_mut_ptr().cast(),
                len,
                iv.as_mut_ptr(),
            )
        })
    }
}

impl Drop for Skcipher {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`, not in use (`&mut self`); the request before its transform.
        // `crypto_free_skcipher` wipes the key schedule.
        unsafe {
            bindings::dmrti_skcipher_request_free(self.req.as_ptr());
            bindings::dmrti_free_skcipher(self.tfm.as_ptr());
        }
    }
}
