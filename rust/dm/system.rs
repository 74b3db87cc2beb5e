// SPDX-License-Identifier: GPL-2.0

//! Whole-system reactions a target may be configured for (restart or panic on corruption).

use kernel::prelude::*;

use super::context::MaySleep;
use crate::bindings;

/// Restarts the machine, logging `reason`.
pub fn restart(reason: &'static CStr) -> ! {
    // SAFETY: `kernel_restart` takes the reason as a C string that it only reads.
    unsafe { bindings::kernel_restart(reason.as_char_ptr().cast_mut()) };
    // `kernel_restart` does not return; should a platform fail to restart, stop here.
    loop {
        core::hint::spin_loop();
    }
}

/// Panics the kernel with `reason`.
pub fn panic(reason: &'static CStr) -> ! {
    // SAFETY: a "%s" format with one C string argument.
    unsafe { bindings::panic(c"%s".as_char_ptr(), reason.as_char_ptr()) }
}

/// Whether the machine is halting, powering off or restarting.
pub fn shutting_down() -> bool {
    // SAFETY: `system_state` is a plain global that only ever moves forward; a racy read is fine.
    let state = unsafe { bindings::system_state };
    matches!(
        state,
        bindings::system_states_SYSTEM_HALT
            | bindings::system_states_SYSTEM_POWER_OFF
            | bindings::system_states_SYSTEM_RESTART
    )
}

/// Whether a rate-limited message may be logged now (the kernel's shared `printk_ratelimit`).
pub fn log_ratelimited() -> bool {
    // SAFETY: `__printk_ratelimit` only uses the name to report suppressed messages.
    unsafe { bindings::__printk_ratelimit(c"dm_rust".as_char_ptr()) != 0 }
}

/// The kernel command line, as `/proc/cmdline` shows it (at most 4 KiB). May sleep; fails when
/// `/proc` is not mounted in the caller's namespace.
pub fn kernel_cmdline(_s: &MaySleep<'_>) -> Result<KVec<u8>> {
    const MAX: usize = 4096;
    let mut buf = KVec::from_elem(0u8, MAX, GFP_KERNEL)?;
    // SAFETY: the path is a static C string; the caller may sleep.
    let file = unsafe { bindings::filp_open(c"/proc/cmdline".as_char_ptr(), 0, 0) };
    let file = kernel::error::from_err_ptr(file)?;
    let mut pos: bindings::loff_t = 0;
    // SAFETY: `file` is open (just returned by `filp_open`); `buf` has room for `MAX` bytes.
    let n = unsafe { bindings::kernel_read(file, buf.as_mut_ptr().cast(), MAX, &mut pos) };
    // SAFETY: `file` is open and ours; nothing uses it afterwards.
    unsafe { bindings::filp_close(file, core::ptr::null_mut()) };
    let n = usize::try_from(n).map_err(|_| Error::from_errno(n as i32))?;
    buf.truncate(n);
    Ok(buf)
}

/// A module parameter of dm_rust (declared in `rust/glue.c`).
#[derive(Clone, Copy)]
pub enum Param {
    /// `upstream_names`
    UpstreamNames,
    /// `require_signatures`
    RequireSignatures,
    /// `keyring_unsealed`
    KeyringUnsealed,
}

/// The value of a module parameter.
pub fn param(p: Param) -> bool {
    let v = match p {
        Param::UpstreamNames => &raw const bindings::dm_rust_param_upstream_names,
        Param::RequireSignatures => &raw const bindings::dm_rust_param_require_signatures,
        Param::KeyringUnsealed => &raw const bindings::dm_rust_param_keyring_unsealed,
    };
    // SAFETY: the parameters are `bool`s of the module, set by the module loader before
    // `init` and read-only afterwards (permissions 0444), so reading them races with nothing.
    unsafe { v.read() }
}
