// SPDX-License-Identifier: GPL-2.0

//! Inline encryption (blk-crypto): keys a target starts on its device, and bios handed to the
//! device with an encryption context, which the device below encrypts (inline encryption
//! hardware, or blk-crypto's software fallback).
//!
//! Ownership follows the devices' (see `Documentation/design.md`, "Ownership"). A `struct
//! blk_crypto_key` must stay at its address and unchanged while any bio refers to it, and be
//! evicted from the device before it is freed. The adapter therefore owns the keys a
//! constructor starts ([`TargetCtx::start_blk_crypto_key`]), like the devices: it evicts and
//! wipes them after the target's state is dropped (no bio is in flight then), or when the
//! constructor fails. The target only gets a [`KeyId`], which names a key of the target it is
//! used with: [`Encrypt`], carried out by the adapter after `map` returns, looks it up in the live target's own keys, so no bio can
//! refer to a key that is gone.

use kernel::error::to_result;
use kernel::prelude::*;
use kernel::types::Opaque;

use super::bio::Bio;
use super::device::Device;
use super::target::{Target, TargetCtx, Ti};
use crate::bindings;

/// Largest key blk-crypto takes (`BLK_CRYPTO_MAX_ANY_KEY_SIZE`).
pub const MAX_KEY_SIZE: usize = bindings::DM_RUST_BLK_CRYPTO_MAX_ANY_KEY_SIZE;

/// Key bytes on their way to blk-crypto, wiped when dropped (`memzero_explicit`).
pub struct KeyBuf([u8; MAX_KEY_SIZE]);

impl KeyBuf {
    /// A zeroed buffer.
    pub fn new() -> Self {
        Self([0; MAX_KEY_SIZE])
    }

    /// The buffer, to decode or read a key into.
    pub fn bytes_mut(&mut self) -> &mut [u8; MAX_KEY_SIZE] {
        &mut self.0
    }
}

impl Default for KeyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeyBuf {
    fn drop(&mut self) {
        // SAFETY: the buffer is ours and `MAX_KEY_SIZE` bytes long.
        unsafe { bindings::dm_rust_memzero_explicit(self.0.as_mut_ptr().cast(), MAX_KEY_SIZE) };
    }
}

/// An encryption mode of blk-crypto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// AES-256-XTS, 64-byte keys, 16-byte IVs (the DUN, little endian): dm-crypt's
    /// `aes-xts-plain64`.
    Aes256Xts,
}

/// The type of a blk-crypto key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// The key itself.
    Raw,
    /// A key wrapped by the inline encryption hardware (no software fallback).
    HwWrapped,
}

/// How a key will be used.
#[derive(Clone, Copy, Debug)]
pub struct KeyConfig {
    /// The algorithm.
    pub mode: Mode,
    /// The type of the key.
    pub key_type: KeyType,
    /// Bytes en/decrypted with one DUN: a power of two (512 to 4096 for device-mapper targets).
    pub data_unit_size: u32,
    /// Bytes of DUN the bios will use (1 to 8 with a `u64` DUN).
    pub dun_bytes: u32,
}

/// Why a key could not be started.
#[derive(Clone, Copy, Debug)]
pub enum KeyError {
    /// blk-crypto refused the key or its configuration (`blk_crypto_init_key`): wrong size for
    /// the mode, bad data unit size or DUN size.
    Init(Error),
    /// Neither the device's inline encryption hardware nor blk-crypto's software fallback can
    /// use the key (`blk_crypto_start_using_key`; `ENOPKG`: no fallback for the mode,
    /// `EOPNOTSUPP`: a wrapped key without hardware).
    Start(Error),
    /// Out of memory.
    NoMemory,
}

/// Names one of the blk-crypto keys of a target ([`TargetCtx::start_blk_crypto_key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyId(usize);

/// A key started on a device; owned by the adapter (see the module's documentation).
pub(crate) struct InlineKey {
    /// Never moved (pinned in a box): bios and blk-crypto's keyslots point to it.
    key: Opaque<bindings::blk_crypto_key>,
    /// The device the key is used on, to evict it from.
    dev: Device,
    /// Whether `blk_crypto_init_key` succeeded.
    initialised: bool,
}

// SAFETY: the key is immutable once initialised (blk-crypto only reads it, from any thread); it
// is only written in `start` and `drop`, with exclusive access.
unsafe impl Send for InlineKey {}
// SAFETY: see `Send`: shared access only reads.
unsafe impl Sync for InlineKey {}

impl InlineKey {
    fn raw(&self) -> *mut bindings::blk_crypto_key {
        self.key.get()
    }

    /// Sets the key up and starts using it on `dev`.
    fn start(dev: &Device, bytes: &[u8], cfg: KeyConfig) -> Result<Pin<KBox<Self>>, KeyError> {
        let mut this = KBox::pin(
            Self {
                key: Opaque::uninit(),
                dev: dev.try_clone(),
                initialised: false,
            },
            GFP_KERNEL,
        )
        .map_err(|_| KeyError::NoMemory)?;
        let mode = match cfg.mode {
            Mode::Aes256Xts => bindings::blk_crypto_mode_num_BLK_ENCRYPTION_MODE_AES_256_XTS,
        };
        let key_type = match cfg.key_type {
            KeyType::Raw => bindings::blk_crypto_key_type_BLK_CRYPTO_KEY_TYPE_RAW,
            KeyType::HwWrapped => bindings::blk_crypto_key_type_BLK_CRYPTO_KEY_TYPE_HW_WRAPPED,
        };
        // `blk_crypto_init_key` zeroes the key first, whatever it returns; `drop` wipes it.
        // SAFETY: the key is ours alone (just allocated), pinned, and `bytes` is readable.
        to_result(unsafe {
            bindings::blk_crypto_init_key(
                this.raw(),
                bytes.as_ptr(),
                bytes.len(),
                key_type,
                mode,
                cfg.dun_bytes,
                cfg.data_unit_size,
                bindings::DM_RUST_BLK_CRYPTO_CFG_ALLOW_HW,
            )
        })
        .map_err(KeyError::Init)?;
        // Only marks the key for `drop`; the address does not change.
        // SAFETY: `initialised` is a plain field of a `!Unpin` type we do not move.
        unsafe { this.as_mut().get_unchecked_mut().initialised = true };
        // May allocate blk-crypto's fallback transforms: process context (the constructor).
        // SAFETY: the key was initialised above; the device is open (`Device`).
        to_result(unsafe { bindings::blk_crypto_start_using_key(dev.bdev(), this.raw()) })
            .map_err(KeyError::Start)?;
        Ok(this)
    }

    /// The key's bytes (`size` of them).
    fn bytes(&self) -> &[u8] {
        // SAFETY: the key was initialised (`start` only hands out initialised keys) and is never
        // written again until `drop`: a shared view of its bytes is sound.
        let k = unsafe { &*self.raw() };
        &k.bytes[..(k.size as usize).min(k.bytes.len())]
    }

    /// The largest DUN the key was set up for (`dun_bytes`).
    fn max_dun(&self) -> u64 {
        // SAFETY: as in `bytes`.
        let dun_bytes = unsafe { (*self.raw()).crypto_cfg.dun_bytes };
        match dun_bytes {
            0 => 0,
            1..=7 => (1u64 << (8 * dun_bytes)) - 1,
            _ => u64::MAX,
        }
    }
}

impl Drop for InlineKey {
    fn drop(&mut self) {
        if self.initialised {
            // No bio uses the key any more: the adapter drops keys after the target's state, in
            // the destructor (no bio in flight) or when the constructor fails (no bio yet).
            // Evicting a key that was never used, or whose start failed, does nothing.
            // SAFETY: the key is initialised and unused; the device is open (`Device`); the
            // destructor and constructor run in process context, as eviction requires.
            unsafe { bindings::blk_crypto_evict_key(self.dev.bdev(), self.raw()) };
        }
        // SAFETY: the key is ours alone now; wipe all of it, initialised or not.
        unsafe {
            bindings::dm_rust_memzero_explicit(
                self.raw().cast(),
                core::mem::size_of::<bindings::blk_crypto_key>(),
            )
        };
    }
}

/// The keys of a target, kept by the adapter.
pub(crate) type Keys = KVec<Pin<KBox<InlineKey>>>;

impl TargetCtx<'_> {
    /// Sets up a blk-crypto key from `bytes` and starts using it on `dev` (a device this
    /// constructor opened): blk-crypto checks that the device's inline encryption hardware, or
    /// its software fallback, can use it. The adapter owns the key: it evicts it from `dev` and
    /// wipes it after the target's state is dropped. `bytes` stays the caller's (to wipe).
    pub fn start_blk_crypto_key(
        &mut self,
        dev: &Device,
        bytes: &[u8],
        cfg: KeyConfig,
    ) -> Result<KeyId, KeyError> {
        self.keys_mut()
            .reserve(1, GFP_KERNEL)
            .map_err(|_| KeyError::NoMemory)?;
        let key = InlineKey::start(dev, bytes, cfg)?;
        let keys = self.keys_mut();
        let id = KeyId(keys.len());
        // Cannot fail: room was reserved above.
        keys.push(key, GFP_KERNEL).map_err(|_| KeyError::NoMemory)?;
        Ok(id)
    }
}

impl<T: Target> Ti<T> {
    /// Calls `f` with the bytes of the target's key `id` (for the table line), if it has one.
    pub fn with_blk_crypto_key<R>(&self, id: KeyId, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.holder().keys.get(id.0).map(|k| f(k.bytes()))
    }
}

/// A bio to be encrypted by the device below: what [`MapResult::Encrypt`] asks the abstraction
/// to do once `map` has returned. Made with [`Encrypt::new`].
pub struct Encrypt {
    key: KeyId,
    sector: u64,
    dun: u64,
}

impl Encrypt {
    /// Asks for the bio to be remapped to `sector` of the device the target's key `id` was
    /// started on, given an encryption context (that key, starting at data unit number `dun`),
    /// and handed to blk-crypto: if the device encrypts it (hardware), device-mapper submits it;
    /// if blk-crypto's software fallback must, the fallback takes the bio over (a write is
    /// encrypted into pages of its own and those are written; a read is decrypted when it
    /// completes) and completes it itself.
    ///
    /// The abstraction does this after `map` has returned, so no target code can touch a bio
    /// that blk-crypto has taken over. Only for bios with data, without an encryption context of
    /// their own; anything else is failed, as is a DUN the key was not set up for or a key the
    /// target does not have.
    ///
    /// The context and the fallback's memory come from mempools with `GFP_NOIO`: `map` may wait
    /// for memory, which device-mapper allows for targets that do not take `REQ_NOWAIT` bios
    /// (checked at compile time: `T::FEATURES` must not have `DM_TARGET_NOWAIT`).
    pub fn new<T: Target>(_ti: &Ti<T>, key: KeyId, sector: u64, dun: u64) -> Self {
        const {
            assert!(
                T::FEATURES & bindings::DM_TARGET_NOWAIT as u64 == 0,
                "blk-crypto submission may wait for memory: not for DM_TARGET_NOWAIT targets"
            )
        };
        Self { key, sector, dun }
    }
}

/// Carries out an [`Encrypt`] request for `bio`, after the target's `map` returned it; returns
/// the `DM_MAPIO_*` value for device-mapper.
///
/// # Safety
///
/// `bio` is the bio device-mapper handed to `ti`'s `map`, which returned `req` for it; nothing
/// refers to the bio any more (the target's `&mut Bio` ended with `map`).
pub(crate) unsafe fn submit<T: Target>(ti: &Ti<T>, bio: &mut Bio, req: Encrypt) -> u32 {
    let Some(key) = ti.holder().keys.get(req.key.0) else {
        return bindings::DM_MAPIO_KILL;
    };
    // SAFETY: the bio is valid and ours (`Bio`'s invariant).
    let (has_data, has_ctx) = unsafe {
        (
            bindings::dm_rust_bio_has_data(bio.as_raw()),
            bindings::dm_rust_bio_has_crypt_ctx(bio.as_raw()),
        )
    };
    if !has_data || has_ctx || req.dun > key.max_dun() {
        return bindings::DM_MAPIO_KILL;
    }
    // The key's own device: blk-crypto evicts the key from that one only.
    bio.remap(&key.dev, req.sector);
    let mut dun_array = [0u64; bindings::DM_RUST_BLK_CRYPTO_DUN_ARRAY_SIZE];
    dun_array[0] = req.dun;
    // The context points to the key, which lives in the target's holder until the destructor,
    // when no bio is in flight (`InlineKey`).
    // SAFETY: the bio is ours and has no context; the key is initialised and pinned; `GFP_NOIO`
    // may sleep, which `map` of a target without `DM_TARGET_NOWAIT` may (`Encrypt::new`).
    unsafe {
        bindings::bio_crypt_set_ctx(
            bio.as_raw(),
            key.raw(),
            dun_array.as_ptr(),
            bindings::DM_RUST_GFP_NOIO,
        )
    };
    // SAFETY: the bio has data and a context, and goes to the device the key was started on
    // (remapped above). On `false` blk-crypto owns the bio and has completed it or will:
    // device-mapper must not submit it (`DM_MAPIO_SUBMITTED`), and nothing touches it after
    // this (the caller's contract).
    if unsafe { bindings::__blk_crypto_submit_bio(bio.as_raw()) } {
        bindings::DM_MAPIO_REMAPPED
    } else {
        bindings::DM_MAPIO_SUBMITTED
    }
}
