// SPDX-License-Identifier: GPL-2.0

//! Keys and signatures: reading a user key's payload and checking PKCS#7 signatures against the
//! kernel's trusted keyrings.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::error::{from_err_ptr, to_result};
use kernel::prelude::*;

use crate::bindings;

/// Returns a copy of the payload of the user key `description` (`keyctl add user ...`).
pub fn user_key_payload(description: &[u8]) -> Result<KVec<u8>> {
    let mut cdesc = KVec::with_capacity(description.len() + 1, GFP_KERNEL)?;
    cdesc.extend_from_slice(description, GFP_KERNEL)?;
    cdesc.push(0, GFP_KERNEL)?;
    // SAFETY: `cdesc` is NUL-terminated.
    let key = from_err_ptr(unsafe { bindings::dm_rust_request_user_key(cdesc.as_ptr().cast()) })?;
    // SAFETY: `key` is a referenced key; its semaphore protects the payload while held.
    let result = unsafe {
        bindings::down_read(&raw mut (*key).sem);
        let payload = bindings::dm_rust_user_key_payload_locked(key);
        let r = if payload.is_null() {
            Err(EKEYREVOKED)
        } else {
            let data = (*payload).data.as_ptr();
            let len = usize::from((*payload).datalen);
            KVec::from_elem(0u8, len, GFP_KERNEL)
                .map(|mut v| {
                    core::ptr::copy_nonoverlapping(data.cast::<u8>(), v.as_mut_ptr(), len);
                    v
                })
                .map_err(Error::from)
        };
        bindings::up_read(&raw mut (*key).sem);
        bindings::key_put(key);
        r
    };
    result
}

/// Kernel key types whose payload is a `user_key_payload` (what dm-crypt reads keys from).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum UserKeyType {
    /// `logon`: readable by the kernel only (cryptsetup's LUKS2 keys).
    Logon,
    /// `user`.
    User,
}

/// Copies the payload of the `kind` key `description` into `out`, which must be exactly as long
/// as the payload (`EINVAL` otherwise, as dm-crypt's `set_key_user`). Nothing is copied on error.
pub fn read_user_type_key(kind: UserKeyType, description: &[u8], out: &mut [u8]) -> Result {
    let mut cdesc = KVec::with_capacity(description.len() + 1, GFP_KERNEL)?;
    cdesc.extend_from_slice(description, GFP_KERNEL)?;
    cdesc.push(0, GFP_KERNEL)?;
    // SAFETY: `cdesc` is NUL-terminated; `request_key` may sleep (callers are in process
    // context: table loads and messages).
    let key = from_err_ptr(unsafe {
        match kind {
            UserKeyType::Logon => bindings::dm_rust_request_logon_key(cdesc.as_ptr().cast()),
            UserKeyType::User => bindings::dm_rust_request_user_key(cdesc.as_ptr().cast()),
        }
    })?;
    // SAFETY: `key` is a referenced key of a user-payload type; its semaphore protects the
    // payload while held; `out` is our own memory, as long as checked.
    unsafe {
        bindings::down_read(&raw mut (*key).sem);
        let payload = bindings::dm_rust_user_key_payload_locked(key);
        let r = if payload.is_null() {
            Err(EKEYREVOKED)
        } else if usize::from((*payload).datalen) != out.len() {
            Err(EINVAL)
        } else {
            core::ptr::copy_nonoverlapping(
                (*payload).data.as_ptr().cast::<u8>(),
                out.as_mut_ptr(),
                out.len(),
            );
            Ok(())
        };
        bindings::up_read(&raw mut (*key).sem);
        bindings::key_put(key);
        r
    }
}

/// The module's `.dm-verity` keyring while it exists (set and cleared by [`VerityKeyring`]).
static VERITY_KEYRING: AtomicPtr<bindings::key> = AtomicPtr::new(core::ptr::null_mut());

/// A `.dm-verity` keyring like dm-verity's own (`.dm-verity-rs` beside the kernel's, without
/// upstream names): root hash signatures by its keys are trusted in
/// addition to the kernel's trusted keyrings, once it holds keys and is sealed. It is sealed at
/// creation unless `unsealed` (dm-verity's `keyring_unsealed`), in which case root can add keys
/// (`keyctl padd asymmetric ... %:.dm-verity`) and then seal it (`keyctl restrict_keyring`).
/// One per module, owned by the module; dropped at unload, after the targets are unregistered.
pub struct VerityKeyring(NonNull<bindings::key>);

// SAFETY: keys are reference counted and locked by the keys subsystem.
unsafe impl Send for VerityKeyring {}
// SAFETY: `&VerityKeyring` gives access to nothing; the keys subsystem locks the keyring.
unsafe impl Sync for VerityKeyring {}

impl VerityKeyring {
    /// Creates the keyring `name` (sealed unless `unsealed`) and makes it the one signatures use.
    pub fn new(name: &'static CStr, unsealed: bool) -> Result<Self> {
        // SAFETY: `name` is a static C string; module init runs in process context.
        let k = from_err_ptr(unsafe { bindings::dm_rust_keyring_alloc(name.as_char_ptr()) })?;
        // `keyring_alloc` returns a valid key or an error pointer.
        let k = NonNull::new(k).ok_or(ENOMEM)?;
        let this = Self(k);
        if !unsealed {
            // SAFETY: `k` is our live keyring.
            to_result(unsafe { bindings::dm_rust_keyring_seal(k.as_ptr()) })?;
        }
        VERITY_KEYRING.store(k.as_ptr(), Ordering::Release);
        Ok(this)
    }
}

impl Drop for VerityKeyring {
    fn drop(&mut self) {
        VERITY_KEYRING.store(core::ptr::null_mut(), Ordering::Release);
        // SAFETY: we own a reference to the keyring (`new`); no target is left to use it.
        unsafe {
            bindings::key_revoke(self.0.as_ptr());
            bindings::key_put(self.0.as_ptr());
        }
    }
}

/// Checks the detached PKCS#7 signature `sig` of `data` as dm-verity does: against the secondary
/// trusted keyring, then the platform keyring (UEFI db), then, when those do not know the key,
/// the sealed `.dm-verity` keyring if it holds keys.
pub fn verify_pkcs7(data: &[u8], sig: &[u8]) -> Result {
    let check = |keyring: usize| {
        // The keyring is one of the special values `verify_pkcs7_signature` accepts.
        // SAFETY: both buffers are readable for their lengths.
        to_result(unsafe {
            bindings::verify_pkcs7_signature(
                data.as_ptr().cast(),
                data.len(),
                sig.as_ptr().cast(),
                sig.len(),
                keyring as *mut bindings::key,
                bindings::key_being_used_for_VERIFYING_UNSPECIFIED_SIGNATURE,
                None,
                core::ptr::null_mut(),
            )
        })
    };
    let unknown = |r: &Result| matches!(r, Err(e) if *e == ENOKEY || *e == EKEYREJECTED);
    let mut r = check(bindings::DM_RUST_VERIFY_USE_SECONDARY_KEYRING as usize);
    if unknown(&r) {
        r = check(bindings::DM_RUST_VERIFY_USE_PLATFORM_KEYRING as usize);
    }
    let own = VERITY_KEYRING.load(Ordering::Acquire);
    // SAFETY: a non-null `own` is the live keyring of `VerityKeyring`, which the module drops
    // only after every target (and so every constructor calling this) is gone.
    if unknown(&r) && !own.is_null() && unsafe { bindings::dm_rust_keyring_sealed_with_keys(own) } {
        r = check(own as usize);
    }
    r
}
