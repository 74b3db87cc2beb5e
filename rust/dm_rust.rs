// SPDX-License-Identifier: GPL-2.0

//! dm-rust: device-mapper targets written in Rust.
//!
//! The crate root: module parameters and the registration of every target. The device-mapper
//! abstraction is in [`dm`]; each target has its own module.

use core::sync::atomic::{AtomicBool, Ordering};

use kernel::prelude::*;

mod bindings;
pub mod crypt;
pub mod dm;
pub mod inlinecrypt;
pub mod integrity;
mod linear;
pub mod verity;

/// The pure verity table parser refers to the argument parser under this name, which it also
/// has in the host test crate (`rust/pure.rs`).
pub(crate) use dm::args as dm_args;
/// The pure integrity modules refer to each other under these names, which they also have in the
/// host test crate.
pub(crate) use integrity::superblock as integrity_superblock;
pub(crate) use integrity::geometry as integrity_geometry;
pub(crate) use integrity::journal as integrity_journal;
pub(crate) use integrity::table as integrity_table;

module! {
    type: DmRust,
    name: "dm_rust",
    authors: ["dm-rust developers"],
    description: "device-mapper targets in Rust",
    license: "GPL",
}

/// Whether verity tables must carry a root hash signature: our `require_signatures`, or, with
/// upstream names, dm-verity's `dm_verity.require_signatures` on the kernel command line.
static REQUIRE_SIGNATURES: AtomicBool = AtomicBool::new(false);

pub(crate) fn require_signatures() -> bool {
    REQUIRE_SIGNATURES.load(Ordering::Relaxed)
}

/// Whether the kernel command line asks dm-verity (whose name we register with upstream names)
/// for signatures. Not knowing is an error: registering "verity" could then accept unsigned
/// tables on a system that forbids them.
fn cmdline_requires_verity_signatures(module: &'static ThisModule) -> Result<bool> {
    let cmdline = dm::MaySleep::in_module_init(module, dm::system::kernel_cmdline).and_then(|r| r).inspect_err(|e| {
        pr_err!(
            "cannot read /proc/cmdline (error {}) to honour dm_verity.require_signatures; not registering upstream names\n",
            e.to_errno()
        )
    })?;
    match dm::cmdline::bool_param(&cmdline, b"dm_verity", b"require_signatures") {
        None => Ok(false),
        Some(Ok(v)) => Ok(v),
        Some(Err(())) => {
            pr_err!("dm_verity.require_signatures on the command line is not a boolean\n");
            Err(EINVAL)
        }
    }
}

// Fields drop in order: the registrations (and so every target) before the keyring they use.
struct DmRust {
    _linear: dm::Registration<linear::Linear>,
    _verity: dm::Registration<verity::Verity>,
    _inlinecrypt: dm::Registration<inlinecrypt::InlineCrypt>,
    _crypt: dm::Registration<crypt::Crypt>,
    _integrity: dm::Registration<integrity::Integrity>,
    _keyring: dm::keys::VerityKeyring,
}

impl kernel::Module for DmRust {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let upstream = dm::system::param(dm::system::Param::UpstreamNames);
        let require = dm::system::param(dm::system::Param::RequireSignatures)
            || (upstream && cmdline_requires_verity_signatures(module)?);
        REQUIRE_SIGNATURES.store(require, Ordering::Relaxed);
        if require {
            pr_info!("verity: root hash signatures required\n");
        }
        // Named like dm-verity's keyring only where we stand in for dm-verity.
        let keyring_name = if upstream {
            c".dm-verity"
        } else {
            c".dm-verity-rs"
        };
        let keyring = dm::keys::VerityKeyring::new(
            keyring_name,
            dm::system::param(dm::system::Param::KeyringUnsealed),
        )?;
        // Each registration unregisters itself when dropped, so a failure below leaves nothing
        // registered.
        let linear = linear::linear_registration(upstream)?;
        let verity = verity::verity_registration(upstream)?;
        let inlinecrypt = inlinecrypt::inlinecrypt_registration(upstream)?;
        let crypt = crypt::crypt_registration(upstream)?;
        let integrity = integrity::integrity_registration(upstream)?;
        Ok(Self {
            _linear: linear,
            _verity: verity,
            _inlinecrypt: inlinecrypt,
            _crypt: crypt,
            _integrity: integrity,
            _keyring: keyring,
        })
    }
}
