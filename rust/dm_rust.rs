// SPDX-License-Identifier: GPL-2.0

//! dm-rust: device-mapper targets written in Rust.
//!
//! The crate root: module parameters and the registration of every target. The device-mapper
//! abstraction is in [`dm`]; each target has its own module.

use kernel::prelude::*;

mod bindings;
pub mod dm;
mod linear;
pub mod verity;

/// The pure verity table parser refers to the argument parser under this name, which it also
/// has in the host test crate (`rust/pure.rs`).
pub(crate) use dm::args as dm_args;

module! {
    type: DmRust,
    name: "dm_rust",
    authors: ["dm-rust developers"],
    description: "device-mapper targets in Rust",
    license: "GPL",
    params: {
        upstream_names: bool {
            default: false,
            description: "Register verity, integrity and crypt under the kernel's target names",
        },
    },
}

struct DmRust {
    _linear: dm::Registration<linear::Linear>,
    _verity: dm::Registration<verity::Verity>,
}

impl kernel::Module for DmRust {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let upstream = module_parameters::upstream_names.value();
        // Each registration unregisters itself when dropped, so a failure below leaves nothing
        // registered.
        let linear = linear::linear_registration(upstream)?;
        let verity = verity::verity_registration(upstream)?;
        Ok(Self {
            _linear: linear,
            _verity: verity,
        })
    }
}
