// SPDX-License-Identifier: GPL-2.0

//! The execution context of a callback, visible in the types.
//!
//! Device-mapper calls `map` where sleeping is forbidden (for `REQ_NOWAIT` bios under the RCU read
//! lock of the live table) and `end_io` from the lower device's completion (often in interrupt
//! context). Its other callbacks, and the work the abstraction runs for a target, are in process
//! context. The adapter lends a [`MaySleep`] only to the latter, and every function of the
//! abstraction that may sleep takes one, so a sleeping call from `map` or `end_io` does not
//! compile.

use core::marker::PhantomData;

use kernel::prelude::*;

/// Proof that the holder runs in process context and may sleep (wait for I/O, allocate with
/// `GFP_KERNEL`, take a mutex), for as long as the borrow lasts.
///
/// It is neither `Send` nor `Sync`, and only lent (`&MaySleep<'_>`) for one callback, so it cannot
/// be kept for later or handed to another thread or context.
pub struct MaySleep<'a> {
    _not_send: PhantomData<*mut ()>,
    _call: PhantomData<&'a ()>,
}

impl MaySleep<'_> {
    /// Runs `f` with a `MaySleep` during module initialisation, which the module loader runs in
    /// process context (the `&ThisModule` that `Module::init` receives stands for that). Refused
    /// (`EPERM`) once a target type is registered: from then on a target's callbacks could be the
    /// caller, and they must get their token from the adapter.
    pub fn in_module_init<R>(
        _module: &'static kernel::ThisModule,
        f: impl FnOnce(&MaySleep<'_>) -> R,
    ) -> Result<R> {
        if super::target::any_registered() {
            return Err(EPERM);
        }
        // SAFETY: no target type is registered yet, so this runs in `Module::init`, in the
        // context of `init_module(2)`: a process that may sleep; the token is lent to `f` only.
        Ok(f(&unsafe { Self::new() }))
    }

    /// Runs `f` in a no-I/O allocation scope (`memalloc_noio_save`): its `GFP_KERNEL` allocations
    /// do not start I/O to reclaim memory, which could wait for the I/O path calling `f` (a
    /// target allocating for a bio it has not finished).
    pub fn noio<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: process context (`MaySleep`); restored below, in the same task.
        let flags = unsafe { crate::bindings::dm_rust_memalloc_noio_save() };
        let r = f();
        // SAFETY: `flags` is what the matching save returned, in this task.
        unsafe { crate::bindings::dm_rust_memalloc_noio_restore(flags) };
        r
    }

    /// # Safety
    ///
    /// The caller runs in process context with no spinlock or RCU read lock held, and keeps the
    /// token within that call.
    pub(crate) unsafe fn new() -> Self {
        Self {
            _not_send: PhantomData,
            _call: PhantomData,
        }
    }
}
