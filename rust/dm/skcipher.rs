// SPDX-License-Identifier: GPL-2.0

//! Symmetric ciphers of the crypto API (`crypto_skcipher`), and buffers for secrets.
//!
//! A [`Skcipher`] is one transform, allocated by its crypto API name (`xts(aes)`,
//! `essiv(cbc(aes),sha256)`, ...), with a mempool of requests sized for it, so that encrypting
//! never fails for want of memory. Data is encrypted block by block, from and to
//! [`IoBlock`]s (the pages of bios), through scatterlists: the crypto code reads and writes the
//! pages itself, and no Rust reference to bio memory is ever made. The algorithm may be
//! asynchronous (hardware, `cryptd`); every operation waits for its completion
//! (`crypto_wait_req`), which sleeps, hence the [`MaySleep`] each one takes.

use core::ptr::NonNull;

use kernel::error::{from_err_ptr, to_result};
use kernel::alloc::flags::__GFP_NOWARN;
use kernel::ffi::c_void;
use kernel::prelude::*;

use super::context::MaySleep;
use super::io::IoBlock;
use crate::bindings;

/// Requests kept in reserve per transform (as dm-crypt's `MIN_IOS`).
const MIN_REQUESTS: i32 = 64;

/// Bytes of memory holding a secret (a key): zeroed with `memzero_explicit` when dropped, so that
/// every path that lets go of it, error paths included, wipes it.
pub struct SecretBuf(KVec<u8>);

impl SecretBuf {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Result<Self> {
        // The size comes from a table line (`:<size>:logon:...` takes up to 2^31 - 1): an
        // impossible one is an error for that line, not a warning in the kernel log.
        Ok(Self(KVec::from_elem(0u8, len, GFP_KERNEL | __GFP_NOWARN)?))
    }

    /// The secret.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The secret, to fill in.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Zeroes the secret (the length stays).
    pub fn wipe(&mut self) {
        // SAFETY: the buffer is ours and `len` bytes long; `memzero_explicit` is not optimised
        // away even though the memory is not read afterwards.
        unsafe { bindings::dm_rust_memzero_explicit(self.0.as_mut_ptr().cast(), self.0.len()) };
    }

    /// Fills the secret with random bytes from the kernel's random source.
    pub fn randomize(&mut self) {
        // SAFETY: the buffer is ours and `len` bytes long.
        unsafe { bindings::get_random_bytes(self.0.as_mut_ptr().cast(), self.0.len()) };
    }

    /// Fills the secret with random bytes from the kernel's random source once it is seeded
    /// (`get_random_bytes_wait`): for a key nobody else will ever know. Waiting may sleep; a
    /// signal interrupts it, and the error is returned with the secret still zero.
    pub fn randomize_seeded(&mut self, _s: &MaySleep<'_>) -> Result {
        // SAFETY: no precondition; it sleeps until the random source is seeded (allowed by `_s`)
        // and returns at once after that.
        to_result(unsafe { bindings::wait_for_random_bytes() })?;
        self.randomize();
        Ok(())
    }
}

impl Drop for SecretBuf {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// A crypto API symmetric cipher transform with its pool of requests.
pub struct Skcipher {
    tfm: NonNull<bindings::crypto_skcipher>,
    reqs: NonNull<bindings::mempool_t>,
}

// SAFETY: a transform may be used from any thread: each operation has its own request (from the
// pool, which locks itself); keys are set only while no I/O is in flight (the target's contract,
// see `set_key`).
unsafe impl Send for Skcipher {}
// SAFETY: as above: `&Skcipher` only starts operations, each on a request of its own.
unsafe impl Sync for Skcipher {}

/// Which way a block goes through the cipher.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Encrypt,
    Decrypt,
}

impl Skcipher {
    /// Allocates the transform `name` (a crypto API algorithm name), excluding implementations
    /// that allocate memory per request, as dm-crypt does.
    pub fn new(name: &str, _s: &MaySleep<'_>) -> Result<Self> {
        let mut cname = KVec::with_capacity(name.len() + 1, GFP_KERNEL)?;
        cname.extend_from_slice(name.as_bytes(), GFP_KERNEL)?;
        cname.push(0, GFP_KERNEL)?;
        // SAFETY: `cname` is NUL-terminated; allocation may sleep, which `_s` allows.
        let tfm = from_err_ptr(unsafe {
            bindings::crypto_alloc_skcipher(
                cname.as_ptr().cast(),
                0,
                bindings::DM_RUST_CRYPTO_ALG_ALLOCATES_MEMORY,
            )
        })?;
        let tfm = NonNull::new(tfm).ok_or(ENOMEM)?;
        // SAFETY: `tfm` is a live transform.
        let size = unsafe { bindings::dm_rust_skcipher_request_size(tfm.as_ptr()) };
        // SAFETY: creating a kmalloc mempool has no precondition.
        let reqs =
            unsafe { bindings::dm_rust_mempool_create_kmalloc_pool(MIN_REQUESTS, size as usize) };
        let Some(reqs) = NonNull::new(reqs) else {
            // SAFETY: `tfm` is ours and not used again.
            unsafe { bindings::dm_rust_crypto_free_skcipher(tfm.as_ptr()) };
            return Err(ENOMEM);
        };
        Ok(Self { tfm, reqs })
    }

    /// IV size in bytes (0 for modes without IV).
    pub fn iv_size(&self) -> u32 {
        // SAFETY: the transform is live (type invariant).
        unsafe { bindings::dm_rust_crypto_skcipher_ivsize(self.tfm.as_ptr()) }
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        // SAFETY: the transform is live (type invariant).
        unsafe { bindings::dm_rust_crypto_skcipher_blocksize(self.tfm.as_ptr()) }
    }

    /// Sets the key. Callers set keys in the constructor and while the device is suspended, when
    /// no operation is in flight, as dm-crypt does.
    pub fn set_key(&self, key: &[u8]) -> Result {
        let len = u32::try_from(key.len()).map_err(|_| EINVAL)?;
        // SAFETY: the transform is live; `key` is readable for `len` bytes; the crypto code copies
        // (expands) it into the transform's context.
        to_result(unsafe { bindings::crypto_skcipher_setkey(self.tfm.as_ptr(), key.as_ptr(), len) })
    }

    /// A request for a series of operations (one per bio), from the pool: waits for one rather
    /// than fail.
    pub fn request(&self, _s: &MaySleep<'_>) -> Request<'_> {
        // SAFETY: the pool is live; `GFP_NOIO` may sleep (allowed by `_s`) and then never fails.
        let req = unsafe { bindings::dm_rust_mempool_alloc(self.reqs.as_ptr(), bindings::DM_RUST_GFP_NOIO) };
        Request {
            tfm: self,
            req: NonNull::new(req.cast()),
        }
    }
}

impl Drop for Skcipher {
    fn drop(&mut self) {
        // SAFETY: no request is out (each borrows the transform); both are ours. Freeing the
        // transform wipes its key schedule (the crypto API zeroes a transform's context on free).
        unsafe {
            bindings::mempool_destroy(self.reqs.as_ptr());
            bindings::dm_rust_crypto_free_skcipher(self.tfm.as_ptr());
        }
    }
}

/// A request of a [`Skcipher`], given back to its pool when dropped.
pub struct Request<'a> {
    tfm: &'a Skcipher,
    /// `None` only if the pool failed, which `GFP_NOIO` rules out; operations then fail.
    req: Option<NonNull<bindings::skcipher_request>>,
}

impl Request<'_> {
    /// Encrypts `src` into `dst` (both one block of the same length) with `iv` (the cipher's IV
    /// size; empty for modes without IV), which the cipher may change.
    pub fn encrypt(
        &mut self,
        src: &IoBlock<'_>,
        dst: &mut IoBlock<'_>,
        iv: &mut [u8],
        s: &MaySleep<'_>,
    ) -> Result {
        self.run(Dir::Encrypt, src, dst, iv, s)
    }

    /// Decrypts `block` in place with `iv`.
    pub fn decrypt_in_place(
        &mut self,
        block: &mut IoBlock<'_>,
        iv: &mut [u8],
        s: &MaySleep<'_>,
    ) -> Result {
        let (page, offset, len) = (block.page, block.offset, block.len);
        let src = IoBlock {
            ptr: block.ptr,
            len,
            page,
            offset,
            _p: core::marker::PhantomData,
        };
        self.run(Dir::Decrypt, &src, block, iv, s)
    }

    fn run(
        &mut self,
        dir: Dir,
        src: &IoBlock<'_>,
        dst: &mut IoBlock<'_>,
        iv: &mut [u8],
        _s: &MaySleep<'_>,
    ) -> Result {
        let req = self.req.ok_or(ENOMEM)?.as_ptr();
        if src.len != dst.len || (!iv.is_empty() && iv.len() < self.tfm.iv_size() as usize) {
            return Err(EINVAL);
        }
        let len = u32::try_from(src.len).map_err(|_| EINVAL)?;
        let iv_ptr = if iv.is_empty() {
            core::ptr::null_mut()
        } else {
            iv.as_mut_ptr().cast::<c_void>()
        };
        // SAFETY: all-zero is valid storage for these C structures; the init functions set them up.
        let (mut wait, mut sg_in, mut sg_out): (
            bindings::crypto_wait,
            bindings::scatterlist,
            bindings::scatterlist,
        ) = unsafe { core::mem::zeroed() };
        // The request, scatterlists and wait live until `crypto_wait_req` returns, which is when
        // the (possibly asynchronous) operation has completed and called `crypto_req_done`.
        // SAFETY: `req` is a request of the pool sized for this transform (`Skcipher::new`),
        // ours until dropped; the pages are those of the mapped blocks, which stay valid for the
        // call (`IoBlock`'s lifetime); `iv_ptr` is NULL or `iv`, at least the IV size long;
        // sleeping in `crypto_wait_req` is allowed (`_s`).
        let r = unsafe {
            bindings::dm_rust_crypto_init_wait(&mut wait);
            bindings::dm_rust_skcipher_request_set_tfm(req, self.tfm.tfm.as_ptr());
            bindings::dm_rust_skcipher_request_set_callback(
                req,
                bindings::DM_RUST_CRYPTO_TFM_REQ_MAY_BACKLOG
                    | bindings::DM_RUST_CRYPTO_TFM_REQ_MAY_SLEEP,
                Some(bindings::crypto_req_done),
                (&raw mut wait).cast(),
            );
            bindings::sg_init_table(&mut sg_in, 1);
            bindings::dm_rust_sg_set_page(&mut sg_in, src.page, len, src.offset);
            bindings::sg_init_table(&mut sg_out, 1);
            bindings::dm_rust_sg_set_page(&mut sg_out, dst.page, len, dst.offset);
            bindings::dm_rust_skcipher_request_set_crypt(req, &mut sg_in, &mut sg_out, len, iv_ptr);
            let r = match dir {
                Dir::Encrypt => bindings::crypto_skcipher_encrypt(req),
                Dir::Decrypt => bindings::crypto_skcipher_decrypt(req),
            };
            bindings::dm_rust_crypto_wait_req(r, &mut wait)
        };
        to_result(r)
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if let Some(req) = self.req {
            // SAFETY: `req` came from this pool and no operation on it is in flight (each waits).
            unsafe { bindings::mempool_free(req.as_ptr().cast(), self.tfm.reqs.as_ptr()) };
        }
    }
}
