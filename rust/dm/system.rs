// SPDX-License-Identifier: GPL-2.0

//! Whole-system reactions a target may be configured for (restart or panic on corruption).

use kernel::prelude::*;

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
