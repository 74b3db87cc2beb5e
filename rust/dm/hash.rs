// SPDX-License-Identifier: GPL-2.0

//! Synchronous hashes of the kernel crypto API (`crypto_shash`).

use core::mem::{align_of, size_of, MaybeUninit};
use core::ptr::NonNull;

use kernel::error::{from_err_ptr, to_result};
use kernel::prelude::*;

use super::io::IoBlock;
use crate::bindings;

/// A hash algorithm instance (`struct crypto_shash`).
pub struct Shash(NonNull<bindings::crypto_shash>);

// SAFETY: a `crypto_shash` is immutable once set up and may be used by many descriptors at once.
unsafe impl Send for Shash {}
// SAFETY: `&Shash` only reads the tfm's immutable data; each `Desc` holds its own state.
unsafe impl Sync for Shash {}

impl Shash {
    /// Looks up the algorithm `name` (e.g. `sha256`); `ENOENT` when the kernel has none.
    pub fn new(name: &str) -> Result<Self> {
        let mut cname = KVec::with_capacity(name.len() + 1, GFP_KERNEL)?;
        cname.extend_from_slice(name.as_bytes(), GFP_KERNEL)?;
        cname.push(0, GFP_KERNEL)?;
        // SAFETY: `cname` is NUL-terminated.
        let tfm = unsafe { bindings::crypto_alloc_shash(cname.as_ptr().cast(), 0, 0) };
        let tfm = from_err_ptr(tfm)?;
        let this = Self(NonNull::new(tfm).ok_or(ENOMEM)?);
        // The descriptor lives on the stack (`Desc`); every shash fits there by definition.
        if this.desc_size() > bindings::DM_RUST_HASH_MAX_DESCSIZE {
            return Err(EINVAL);
        }
        Ok(this)
    }

    fn raw(&self) -> *mut bindings::crypto_shash {
        self.0.as_ptr()
    }

    /// Size of a digest in bytes.
    pub fn digest_size(&self) -> usize {
        // SAFETY: the tfm is live.
        unsafe { bindings::dm_rust_crypto_shash_digestsize(self.raw()) as usize }
    }

    fn desc_size(&self) -> usize {
        // SAFETY: the tfm is live.
        unsafe { bindings::dm_rust_crypto_shash_descsize(self.raw()) as usize }
    }

    /// The algorithm's name (`cra_name`), e.g. `sha256` even when a driver name was asked for.
    pub fn alg_name(&self) -> &CStr {
        // SAFETY: the name lives as long as the tfm.
        unsafe { CStr::from_char_ptr(bindings::dm_rust_crypto_shash_alg_name(self.raw())) }
    }

    /// Sets the key of a keyed hash (`hmac(...)`). Takes `&mut self`: a key is set before the
    /// transform is shared. The crypto API keeps what it derives from the key in the transform's
    /// context, which it wipes when the transform is freed (`kfree_sensitive`).
    pub fn set_key(&mut self, key: &[u8]) -> Result {
        let len = u32::try_from(key.len()).map_err(|_| EINVAL)?;
        // SAFETY: the tfm is live and not shared (`&mut self`); `key` is readable for `len` bytes
        // (the crypto API copies what it needs).
        to_result(unsafe { bindings::crypto_shash_setkey(self.raw(), key.as_ptr(), len) })
    }

    /// Whether the algorithm needs a key it has not been given (`CRYPTO_TFM_NEED_KEY`): hashing
    /// with it would fail.
    pub fn needs_key(&self) -> bool {
        // SAFETY: the tfm is live.
        unsafe { bindings::dm_rust_crypto_shash_need_key(self.raw()) }
    }

    /// A hashing state for this algorithm.
    pub fn desc(&self) -> Desc<'_> {
        let mut d = Desc {
            buf: MaybeUninit::uninit(),
            tfm: self,
        };
        // Only `tfm` must be set before `init`.
        // SAFETY: the buffer is large and aligned enough for a `shash_desc` (`DescBuf`, `new`).
        unsafe { (*d.raw()).tfm = self.raw() };
        d
    }
}

impl Drop for Shash {
    fn drop(&mut self) {
        // SAFETY: the tfm is live and no `Desc` borrows it any more.
        unsafe { bindings::dm_rust_crypto_free_shash(self.raw()) };
    }
}

const DESC_BYTES: usize = size_of::<bindings::shash_desc>() + bindings::DM_RUST_HASH_MAX_DESCSIZE;

#[repr(C, align(16))]
struct DescBuf([u8; DESC_BYTES]);

const _: () = assert!(align_of::<bindings::shash_desc>() <= align_of::<DescBuf>());

/// A hashing state (`struct shash_desc` with its context), on the stack like
/// `SHASH_DESC_ON_STACK`.
pub struct Desc<'a> {
    buf: MaybeUninit<DescBuf>,
    tfm: &'a Shash,
}

impl Desc<'_> {
    fn raw(&mut self) -> *mut bindings::shash_desc {
        self.buf.as_mut_ptr().cast()
    }

    /// Starts a new hash.
    pub fn init(&mut self) -> Result {
        // SAFETY: the descriptor's `tfm` is set (`Shash::desc`) and its context has room.
        to_result(unsafe { bindings::crypto_shash_init(self.raw()) })
    }

    /// Hashes `data`.
    pub fn update(&mut self, data: &[u8]) -> Result {
        let len = u32::try_from(data.len()).map_err(|_| EINVAL)?;
        // SAFETY: the descriptor is set up (`desc`); `data` is readable for `len` bytes.
        to_result(unsafe { bindings::dm_rust_crypto_shash_update(self.raw(), data.as_ptr(), len) })
    }

    /// Hashes a block of a bio's data (read by the C hash code, which tolerates a racing writer:
    /// the digest is then simply wrong).
    pub fn update_block(&mut self, block: &IoBlock<'_>) -> Result {
        let len = u32::try_from(block.len()).map_err(|_| EINVAL)?;
        // SAFETY: the descriptor is set up (`desc`); the block is mapped and `len` bytes long for
        // as long as it is borrowed (`IoBlock`).
        to_result(unsafe { bindings::dm_rust_crypto_shash_update(self.raw(), block.as_ptr(), len) })
    }

    /// Hashes `data` and writes the digest into `out`, which must hold a whole digest.
    pub fn finup(&mut self, data: &[u8], out: &mut [u8]) -> Result {
        if out.len() < self.tfm.digest_size() {
            return Err(EINVAL);
        }
        let len = u32::try_from(data.len()).map_err(|_| EINVAL)?;
        // SAFETY: the descriptor's `tfm` is set (`Shash::desc`); `data` is readable for `len`
        // bytes and `out` has room for a digest (checked above).
        to_result(unsafe {
            bindings::crypto_shash_finup(self.raw(), data.as_ptr(), len, out.as_mut_ptr())
        })
    }
}
