// SPDX-License-Identifier: GPL-2.0

//! Keys and signatures: reading a user key's payload and checking PKCS#7 signatures against the
//! kernel's trusted keyrings.

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
        bindings::down_read(&mut (*key).sem);
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
        bindings::up_read(&mut (*key).sem);
        bindings::key_put(key);
        r
    };
    result
}

/// Checks the detached PKCS#7 signature `sig` of `data` against the secondary trusted keyring
/// and then the platform keyring (UEFI db), as dm-verity does.
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
    match check(bindings::DM_RUST_VERIFY_USE_SECONDARY_KEYRING as usize) {
        Err(e) if e == ENOKEY || e == EKEYREJECTED => {
            check(bindings::DM_RUST_VERIFY_USE_PLATFORM_KEYRING as usize)
        }
        r => r,
    }
}
