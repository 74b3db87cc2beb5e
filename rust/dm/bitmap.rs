// SPDX-License-Identifier: GPL-2.0

//! A fixed-size bitmap whose bits are set concurrently.

use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::prelude::*;

const BITS: u64 = usize::BITS as u64;

/// `len` bits, all clear at first; large ones are allocated with `kvmalloc`.
pub struct AtomicBitmap {
    words: KVVec<AtomicUsize>,
    len: u64,
}

impl AtomicBitmap {
    /// A bitmap of `len` clear bits.
    pub fn new(len: u64) -> Result<Self> {
        let n = usize::try_from(len.div_ceil(BITS)).map_err(|_| E2BIG)?;
        let mut words = KVVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            words.push(AtomicUsize::new(0), GFP_KERNEL)?;
        }
        Ok(Self { words, len })
    }

    /// Whether bit `i` is set (false past the end).
    pub fn test(&self, i: u64) -> bool {
        i < self.len
            && self.words[(i / BITS) as usize].load(Ordering::Relaxed) & (1 << (i % BITS)) != 0
    }

    /// Sets bit `i` (ignored past the end).
    pub fn set(&self, i: u64) {
        if i < self.len {
            self.words[(i / BITS) as usize].fetch_or(1 << (i % BITS), Ordering::Relaxed);
        }
    }
}
