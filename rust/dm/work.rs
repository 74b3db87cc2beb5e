// SPDX-License-Identifier: GPL-2.0

//! Workqueues, for the work a target defers to process context.
//!
//! A target does not own or choose a workqueue at run time: it declares one
//! ([`Target::WORKQUEUE`](super::Target::WORKQUEUE)), the adapter creates it with the target and
//! destroys it, waiting for everything queued, before the target's state is dropped. Deferred
//! work therefore never outlives the target, nor the module (which cannot unload while a target
//! of it exists).

use core::ptr::NonNull;

use kernel::prelude::*;

use super::context::MaySleep;
use super::target::{Target, Ti};
use crate::bindings;

/// How the adapter creates a target's workqueue.
#[derive(Clone, Copy)]
pub struct WorkqueueConfig {
    /// Name shown in `ps`.
    pub name: &'static CStr,
    /// `WQ_*` flags, see [`flags`].
    pub flags: u32,
}

/// A workqueue; destroying it (on drop) waits for the work queued on it.
pub(crate) struct Workqueue(NonNull<bindings::workqueue_struct>);

// SAFETY: workqueues are made to be used from any context and thread.
unsafe impl Send for Workqueue {}
// SAFETY: `&Workqueue` only queues and flushes, which the workqueue code synchronises itself.
unsafe impl Sync for Workqueue {}

/// Flags for [`WorkqueueConfig`].
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
    pub(crate) fn new(name: &'static CStr, flags: u32, max_active: i32) -> Result<Self> {
        let name = name.as_char_ptr();
        // SAFETY: `name` is a static C string; the glue formats it with "%s".
        let wq = unsafe { bindings::dm_rust_alloc_workqueue(name, flags, max_active) };
        NonNull::new(wq).map(Self).ok_or(ENOMEM)
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::workqueue_struct {
        self.0.as_ptr()
    }

    /// Waits until every work item queued so far has run.
    pub(crate) fn flush(&self) {
        // SAFETY: the workqueue is live until `drop`.
        unsafe { bindings::dm_rust_flush_workqueue(self.as_raw()) };
    }
}

impl Drop for Workqueue {
    fn drop(&mut self) {
        // `destroy_workqueue` drains the queue first.
        // SAFETY: the workqueue is live, and whoever could queue on it (the target's callbacks
        // and deferred work) is gone or drained (`Adapter::dtr` drops it first).
        unsafe { bindings::destroy_workqueue(self.as_raw()) };
    }
}

/// Work a target defers from `map` (where it must not sleep or read metadata) to process
/// context, with [`Ti::defer`].
pub trait Defer: Target {
    /// What one deferred call needs.
    type Item: Send;

    /// Runs on the target's workqueue ([`Target::WORKQUEUE`]).
    fn run_deferred(&self, ti: &Ti<Self>, item: Self::Item, s: &MaySleep<'_>);
}

#[repr(C)]
struct Deferred<T: Defer> {
    work: bindings::work_struct,
    ti: *mut bindings::dm_target,
    item: T::Item,
}

unsafe extern "C" fn run_deferred<T: Defer>(w: *mut bindings::work_struct) {
    // SAFETY: `w` is the first field of a `Deferred<T>` that `Ti::defer` boxed and queued
    // (`repr(C)`); the work function owns it now.
    let d = unsafe { KBox::from_raw(w.cast::<Deferred<T>>()) };
    let Deferred { ti, item, .. } = KBox::into_inner(d);
    // The target is constructed and alive: `Ti::defer` queued this on the target's own queue,
    // which `Adapter::dtr` destroys (waiting for this function) before the state goes away.
    // SAFETY: so `from_raw`'s contract holds; work items run in process context.
    let (ti, s) = unsafe { (Ti::<T>::from_raw(ti), MaySleep::new()) };
    ti.holder().target.run_deferred(ti, item, &s);
}

impl<T: Defer> Ti<T> {
    /// Queues `item` for [`Defer::run_deferred`] on the target's workqueue. Allocates without
    /// sleeping (callable from `map`) and fails, dropping `item`, when memory is short.
    pub fn defer(&self, item: T::Item) -> Result {
        const { assert!(T::WORKQUEUE.is_some(), "deferring work needs a WORKQUEUE") };
        let wq = self.holder().wq.as_ref().ok_or(EINVAL)?;
        let d = KBox::new(
            Deferred::<T> {
                // SAFETY: an all-zero `work_struct` is valid storage; `init_work` sets it up.
                work: unsafe { core::mem::zeroed() },
                ti: self.as_raw(),
                item,
            },
            GFP_NOWAIT | __GFP_NOWARN,
        )?;
        let raw = KBox::into_raw(d);
        // Ownership passes to the work item, which `run_deferred::<T>` frees.
        // SAFETY: `raw` is a live, uniquely owned `Deferred<T>`; `wq` is live (the holder's).
        unsafe {
            bindings::dm_rust_init_deferred_work(&raw mut (*raw).work, Some(run_deferred::<T>));
            bindings::dm_rust_queue_work(wq.as_raw(), &raw mut (*raw).work);
        }
        Ok(())
    }
}
