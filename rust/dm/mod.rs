// SPDX-License-Identifier: GPL-2.0

//! A safe device-mapper abstraction.
//!
//! A target is a type implementing [`Target`]; [`declare_target!`](crate::declare_target) connects
//! it to its C `struct target_type` (in `rust/glue.c`) and [`Registration`] registers it. Targets
//! see only safe types: table arguments ([`Args`]), devices ([`Device`]), bios ([`Bio`]), status
//! output ([`StatusWriter`]) and queue limits ([`QueueLimits`]). All `unsafe` code of the module
//! lives below this directory.

// The abstraction serves every target; not each target uses all of it.
#![allow(dead_code)]

pub mod args;
pub mod saved_args;
pub mod bio;
pub mod bitmap;
pub mod blk_crypto;
pub mod bufio;
pub mod clone;
pub mod cmdline;
pub mod context;
pub mod device;
pub mod hash;
pub mod io;
pub mod keys;
pub mod skcipher;
pub mod status;
pub mod system;
pub mod target;
pub mod work;

pub use args::Args;
pub use bio::Bio;
pub use context::MaySleep;
pub use device::{Device, DeviceVisitor};
pub use status::{StatusType, StatusWriter};
pub use target::{CtrError, MapResult, Registration, Target, TargetCtx, Ti};
