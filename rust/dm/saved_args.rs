// SPDX-License-Identifier: GPL-2.0

//! A copy of a table line's arguments, kept by a target to print its table back (`dmsetup
//! table`): device-mapper's own copy of the line is gone after the constructor.

use kernel::prelude::*;

use super::args::Args;

/// The arguments of a table line, copied from the constructor's [`Args`].
pub struct SavedArgs {
    bytes: KVec<u8>,
    ends: KVec<usize>,
}

impl SavedArgs {
    /// Copies the arguments `args` has not consumed yet.
    pub fn new(args: &Args<'_>) -> Result<Self> {
        Self::with_replaced(args, None)
    }

    /// Copies the arguments `args` has not consumed yet, with the one at `replace.0` (counted
    /// from there) replaced by `replace.1`: a key kept out of the copy, say.
    pub fn with_replaced(args: &Args<'_>, replace: Option<(usize, &[u8])>) -> Result<Self> {
        let mut a = args.clone();
        let (mut bytes, mut ends) = (KVec::new(), KVec::new());
        let mut i = 0;
        while let Ok(arg) = a.next(c"") {
            let arg = match replace {
                Some((at, with)) if at == i => with,
                _ => arg,
            };
            bytes.extend_from_slice(arg, GFP_KERNEL)?;
            ends.push(bytes.len(), GFP_KERNEL)?;
            i += 1;
        }
        Ok(Self { bytes, ends })
    }

    /// The arguments again, as slices of the saved bytes.
    pub fn slices(&self) -> Result<KVec<&[u8]>> {
        let mut v = KVec::with_capacity(self.ends.len(), GFP_KERNEL)?;
        let mut start = 0;
        for &end in self.ends.iter() {
            v.push(&self.bytes[start..end], GFP_KERNEL)?;
            start = end;
        }
        Ok(v)
    }
}
