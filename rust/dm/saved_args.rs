// SPDX-License-Identifier: GPL-2.0

//! A copy of a table line's arguments, kept by a target to print its table back (`dmsetup
//! table`): device-mapper's own copy of the line is gone after the constructor.

use kernel::prelude::*;

use super::args::Args;
use super::skcipher::SecretBuf;

/// The arguments of a table line, copied from the constructor's [`Args`].
pub struct SavedArgs {
    bytes: SecretBuf,
    ends: KVec<usize>,
}

impl SavedArgs {
    /// Copies the arguments `args` has not consumed yet.
    pub fn new(args: &Args<'_>) -> Result<Self> {
        Self::with_replaced(args, None)
    }

    /// Copies the arguments `args` has not consumed yet, with the one at `replace.0` (counted
    /// from there) replaced by `replace.1`: a key kept out of the copy, say.
    pub fn with_replaced<'b>(args: &Args<'b>, replace: Option<(usize, &'b [u8])>) -> Result<Self> {
        let pick = |arg: &'b [u8], i: usize| match replace {
            Some((at, with)) if at == i => with,
            _ => arg,
        };
        // The sizes first, then one allocation of each.
        let (mut total, mut n) = (0usize, 0usize);
        let mut a = args.clone();
        while let Ok(arg) = a.next(c"") {
            total = total.checked_add(pick(arg, n).len()).ok_or(ENOMEM)?;
            n += 1;
        }
        let mut bytes = SecretBuf::new(total)?;
        let mut ends = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut a = args.clone();
        let mut pos = 0;
        for i in 0..n {
            let arg = pick(a.next(c"").map_err(|_| EINVAL)?, i);
            bytes.as_mut_slice()[pos..pos + arg.len()].copy_from_slice(arg);
            pos += arg.len();
            ends.push(pos, GFP_KERNEL)?;
        }
        Ok(Self { bytes, ends })
    }

    /// The arguments again, as slices of the saved bytes.
    pub fn slices(&self) -> Result<KVec<&[u8]>> {
        let mut v = KVec::with_capacity(self.ends.len(), GFP_KERNEL)?;
        let mut start = 0;
        for &end in self.ends.iter() {
            v.push(&self.bytes.as_slice()[start..end], GFP_KERNEL)?;
            start = end;
        }
        Ok(v)
    }
}
