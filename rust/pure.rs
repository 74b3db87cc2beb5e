// SPDX-License-Identifier: GPL-2.0

//! The module's pure-Rust parts, gathered for host tests (`cargo test`).
//!
//! Each file named here is also a module of the kernel crate (`rust/dm_rust.rs`); none of them uses
//! the kernel crate, allocates, or needs `std`.

#![no_std]

#[cfg(test)]
extern crate std;

/// Table-line argument parsing.
#[path = "dm/args.rs"]
pub mod args;

/// The argument parser under the name the kernel crate also gives it, for modules shared by both.
pub use args as dm_args;

#[path = "verity/table.rs"]
pub mod verity_table;

#[path = "verity/tree.rs"]
pub mod verity_tree;

/// Module parameters on the kernel command line.
#[path = "dm/cmdline.rs"]
pub mod cmdline;

/// dm-integrity's on-disk superblock.
#[path = "integrity/superblock.rs"]
pub mod integrity_superblock;

/// dm-integrity's layout arithmetic.
#[path = "integrity/geometry.rs"]
pub mod integrity_geometry;

/// The dm-integrity table line.
#[path = "integrity/table.rs"]
pub mod integrity_table;

/// dm-integrity's journal: commit ids, replay.
#[path = "integrity/journal.rs"]
pub mod integrity_journal;

/// dm-integrity's B-mode dirty bitmap.
#[path = "integrity/bitmap.rs"]
pub mod integrity_bitmap;

/// Formatting a blank dm-integrity device.
#[path = "integrity/format.rs"]
pub mod integrity_format;

/// dm-integrity's recalculation bookkeeping and controls.
#[path = "integrity/recalc.rs"]
pub mod integrity_recalc;

/// dm-crypt: the table line and the IV generators (modules of the kernel crate's `crypt`).
pub mod crypt {
    /// IV generation per sector.
    #[path = "iv.rs"]
    pub mod iv;

    /// The table line, and the lines written back.
    #[path = "table.rs"]
    pub mod table;
}

/// The dm-inlinecrypt table line and the DUNs of bios.
#[path = "inlinecrypt/table.rs"]
pub mod inlinecrypt_table;
