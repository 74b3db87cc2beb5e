// SPDX-License-Identifier: GPL-2.0

//! `linear-rs`: maps the target onto a range of one device, like the kernel's `linear`.
//!
//! Table line: `<dev> <offset>`, where `offset` is the first sector of `dev` used.

// Targets are safe Rust: all unsafe code lives in the abstraction (`rust/dm/`).
#![deny(unsafe_code)]

use core::fmt::Write;
use core::pin::Pin;

use kernel::ffi::c_int;
use kernel::prelude::*;

use crate::bindings;
use crate::dm::{
    Args, Bio, CtrError, Device, DeviceVisitor, MapResult, StatusType, StatusWriter, Target,
    TargetCtx, Ti,
};

/// A linear mapping.
pub(crate) struct Linear {
    dev: Device,
    /// First sector of `dev` used.
    start: u64,
    /// Length of the target in sectors.
    len: u64,
}

#[vtable]
impl Target for Linear {
    const NAME: &'static CStr = c"linear-rs";
    const VERSION: [u32; 3] = [1, 0, 0];
    const FEATURES: u64 = (bindings::DM_TARGET_PASSES_INTEGRITY
        | bindings::DM_TARGET_NOWAIT
        | bindings::DM_TARGET_PASSES_CRYPTO
        | bindings::DM_TARGET_ATOMIC_WRITES) as u64;

    fn new(ti: &mut TargetCtx<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        if args.remaining() != 2 {
            return Err(CtrError::new(EINVAL, c"Invalid argument count"));
        }
        let path = args.next(c"Invalid argument count")?;
        let start = args.next_u64(c"Invalid device sector")?;
        let len = ti.len();
        let dev = ti.get_device(path)?;
        if start.checked_add(len).is_none_or(|end| end > dev.sectors()) {
            return Err(CtrError::new(EINVAL, c"Device too small for the target"));
        }
        ti.set_num_flush_bios(1);
        // Flushes only pass through: device-mapper may send them to the devices directly.
        ti.set_flush_bypasses_map(true);
        ti.set_num_discard_bios(1);
        ti.set_num_secure_erase_bios(1);
        ti.set_num_write_zeroes_bios(1);
        KBox::pin(Self { dev, start, len }, GFP_KERNEL)
            .map_err(|_| CtrError::new(ENOMEM, c"Cannot allocate linear context"))
    }

    fn map(&self, ti: &Ti<Self>, bio: &mut Bio) -> MapResult {
        match bio.target_sector(ti) {
            // Within the target (`rel < len`), and `start + len` fits the device (`new`).
            Some(rel) => match self.start.checked_add(rel) {
                Some(sector) => bio.remap(&self.dev, sector),
                None => return MapResult::Kill,
            },
            // An empty flush: it only needs to reach the device.
            None => bio.set_dev(&self.dev),
        }
        MapResult::Remapped
    }

    fn status(&self, ti: &Ti<Self>, kind: StatusType, out: &mut StatusWriter<'_>) {
        let _ = match kind {
            StatusType::Info => Ok(()),
            StatusType::Table => write!(out, "{} {}", self.dev.name(), self.start),
            StatusType::Ima => ti.write_ima_name_version(out).and_then(|()| {
                write!(
                    out,
                    ",device_name={},start={};",
                    self.dev.name(),
                    self.start
                )
            }),
        };
    }

    fn iterate_devices(&self, visit: &mut DeviceVisitor<'_>) -> c_int {
        visit.visit(&self.dev, self.start, self.len)
    }
}

crate::declare_target!(Linear, linear);
