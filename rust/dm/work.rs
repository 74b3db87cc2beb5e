// SPDX-License-Identifier: GPL-2.0

//! Workqueues, for the work a target defers to process context.

use core::ptr::NonNull;

use kernel::prelude::*;

use super::target::{state, Target, Ti};
use crate::bindings;

/// A workqueue owned by a target; destroying it (on drop) waits for the work queued on it.
pub struct Workqueue(NonNull<bindings::workqueue_struct>);

// SAFETY: workqueues are made to be used from any context and thread.
unsafe impl Send for Workqueue {}
// SAFETY: as above; `&Workqueue` only queues and flushes.
unsafe impl Sync for Workqueue {}

/// Flags for [`Workqueue::new`].
pub mod flags {
    use crate::bindings;
    /// May be used for memory reclaim (I/O paths need it).
    pub const MEM_RECLAIM: u32 = bindings::wq_flags_WQ_MEM_RECLAIM;
    /// Runs its work at high priority.
    pub const HIGHPRI: u32 = bindings::wq_flags_WQ_HIGHPRI;
    /// Runs work on the CPU that queued it.
    pub const PERCPU: u32 = bindings::wq_flags_WQ_PERCPU;
}

impl Workqueue {
    /// Allocates a workqueue named `name` (shown in `ps`).
    pub fn new(name: &'static CStr, flags: u32, max_active: i32) -> Result<Self> {
        let name = name.as_char_ptr();
        // SAFETY: `name` is a static C string; the glue formats it with "%s".
        let wq = unsafe { bindings::dm_rust_alloc_workqueue(name, flags, max_active) };
        NonNull::new(wq).map(Self).ok_or(ENOMEM)
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::workqueue_struct {
        self.0.as_ptr()
    }

    /// Waits until every work item queued so far has run.
    pub fn flush(&self) {
        // SAFETY: the workqueue is live until `drop`.
        unsafe { bindings::dm_rust_flush_workqueue(self.as_raw()) };
    }
}

impl Drop for Workqueue {
    fn drop(&mut self) {
        // `destroy_workqueue` drains the queue first.
        // SAFETY: the workqueue is live and nothing can queue on it any more (we own it).
        unsafe { bindings::destroy_workqueue(self.as_raw()) };
    }
}

/// Work a target defers from `map` (where it must not sleep or read metadata) to process
/// context, with [`defer`].
pub trait Defer: Target {
    /// What one deferred call needs.
    type Item: Send;

    /// Runs on the target's [`Target::io_queue`].
    fn run_deferred(&self, ti: &Ti, item: Self::Item);
}

#[repr(C)]
struct Deferred<T: Defer> {
    work: bindings::work_struct,
    ti: *mut bindings::dm_target,
    item: T::Item,
}

unsafe extern "C" fn run_deferred<T: Defer>(w: *mut bindings::work_struct) {
    // The target is alive: its destructor flushes its queue before dropping it (`Adapter::dtr`).
    // SAFETY: `w` is the first field of a `Deferred<T>` boxed by `defer` (`repr(C)`).
    unsafe {
        let d = KBox::from_raw(w.cast::<Deferred<T>>());
        let Deferred { ti, item, .. } = KBox::into_inner(d);
        state::<T>(ti).run_deferred(Ti::from_raw(ti), item);
    }
}

/// Queues `item` for [`Defer::run_deferred`] on `t`'s own workqueue. Allocates without sleeping
/// and fails (dropping `item`) when memory is short or the target has no queue of its own.
pub fn defer<T: Defer>(t: &T, ti: &Ti, item: T::Item) -> Result {
    let wq = t.io_queue().ok_or(EINVAL)?;
    let d = KBox::new(
        Deferred::<T> {
            // SAFETY: an all-zero `work_struct` is valid storage; `dm_rust_init_work` sets it up.
            work: unsafe { core::mem::zeroed() },
            ti: ti.as_raw(),
            item,
        },
        GFP_NOWAIT | __GFP_NOWARN,
    )?;
    let raw = KBox::into_raw(d);
    // Ownership passes to the work item, which `run_deferred::<T>` frees. The queue belongs to
    // the target, which flushes it before it goes away.
    // SAFETY: `raw` is a live, uniquely owned `Deferred<T>`.
    unsafe {
        bindings::dm_rust_init_work(&mut (*raw).work, Some(run_deferred::<T>));
        bindings::dm_rust_queue_work(wq.as_raw(), &mut (*raw).work);
    }
    Ok(())
}
