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

/// How the adapter creates a target's workqueue: declared by the target
/// ([`Target::WORKQUEUE`](super::Target::WORKQUEUE)), or chosen per table by its constructor
/// ([`TargetCtx::set_workqueue`](super::TargetCtx::set_workqueue)).
#[derive(Clone, Copy)]
pub struct WorkqueueConfig {
    /// Name shown in `ps`.
    pub name: &'static CStr,
    /// `WQ_*` flags, from [`flags`] only: the adapter refuses any other bit (see
    /// [`flags::ALLOWED`]).
    pub flags: u32,
    /// How many work items may run (or sleep) at once.
    pub max_active: MaxActive,
}

/// The `max_active` of a workqueue: how many of its work items may be active at once (per CPU
/// for a per-CPU queue, in all for an unbound one).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MaxActive {
    /// The kernel's default (`0` to `alloc_workqueue`: `WQ_DFL_ACTIVE`).
    Default,
    /// At most this many (the kernel clamps it to `1..=WQ_MAX_ACTIVE`).
    Limit(u16),
    /// As many as there are CPUs online when the queue is made (dm-crypt's unbound queue).
    OnlineCpus,
}

/// The kernel's largest `max_active` (`WQ_MAX_ACTIVE`).
const WQ_MAX_ACTIVE: u32 = 2048;

impl MaxActive {
    fn to_raw(self) -> i32 {
        match self {
            MaxActive::Default => 0,
            MaxActive::Limit(n) => i32::from(n.max(1)),
            // SAFETY: reading the number of online CPUs has no precondition.
            MaxActive::OnlineCpus => unsafe { bindings::dm_rust_num_online_cpus() }
                .clamp(1, WQ_MAX_ACTIVE) as i32,
        }
    }
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
    /// Runs work on any CPU the scheduler picks (the kernel's default from 7.x on, named here
    /// so that a target says which one it means).
    pub const UNBOUND: u32 = bindings::wq_flags_WQ_UNBOUND;
    /// Long CPU-bound work (encryption): a per-CPU queue's work item does not hold off the
    /// other work items of its CPU (meaningless with [`UNBOUND`]).
    pub const CPU_INTENSIVE: u32 = bindings::wq_flags_WQ_CPU_INTENSIVE;
    /// Every flag a target may ask for. Others are refused: with `WQ_BH` the work would run in
    /// softirq context, where the [`MaySleep`](crate::dm::MaySleep) the work functions hand out
    /// would be a lie; `WQ_FREEZABLE` would stall I/O across a system suspend.
    pub const ALLOWED: u32 = MEM_RECLAIM | HIGHPRI | PERCPU | UNBOUND | CPU_INTENSIVE;
}

impl WorkqueueConfig {
    /// Whether the flags are ones the adapter accepts: only [`flags::ALLOWED`] bits, and not
    /// both [`flags::PERCPU`] and [`flags::UNBOUND`].
    pub fn is_valid(&self) -> bool {
        let both = flags::PERCPU | flags::UNBOUND;
        self.flags & !flags::ALLOWED == 0 && self.flags & both != both
    }
}

impl Workqueue {
    /// Allocates the workqueue `cfg` describes; `EINVAL` for flags it does not accept
    /// ([`WorkqueueConfig::is_valid`]): its work functions run in process context only.
    pub(crate) fn new(cfg: &WorkqueueConfig) -> Result<Self> {
        if !cfg.is_valid() {
            return Err(EINVAL);
        }
        let name = cfg.name.as_char_ptr();
        // SAFETY: `name` is a static C string; the glue formats it with "%s". The flags are
        // checked above: no `WQ_BH`, so the work runs in process context.
        let wq =
            unsafe { bindings::dm_rust_alloc_workqueue(name, cfg.flags, cfg.max_active.to_raw()) };
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
