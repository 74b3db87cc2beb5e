// SPDX-License-Identifier: GPL-2.0

//! Table-line argument parsing.
//!
//! Pure logic: no kernel dependencies, so the same file is built into the module and tested on the
//! host with `cargo test`. Every error carries the static message that device-mapper shows the user
//! (`ti->error`); the errno is always `EINVAL`.

use core::ffi::CStr;

/// A table-line error: the message device-mapper reports for the failed table load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgError(pub &'static CStr);

/// Result of argument parsing.
pub type ArgResult<T> = Result<T, ArgError>;

/// The arguments of one target's table line, consumed front to back.
#[derive(Clone, Debug)]
pub struct Args<'a> {
    argv: &'a [&'a [u8]],
}

impl<'a> Args<'a> {
    /// Wraps the arguments (without their NUL terminators).
    pub fn new(argv: &'a [&'a [u8]]) -> Self {
        Self { argv }
    }

    /// Number of arguments not yet consumed.
    pub fn remaining(&self) -> usize {
        self.argv.len()
    }

    /// Whether every argument has been consumed.
    pub fn is_empty(&self) -> bool {
        self.argv.is_empty()
    }

    /// Takes the next argument, or fails with `err` when there is none.
    pub fn next(&mut self, err: &'static CStr) -> ArgResult<&'a [u8]> {
        let (first, rest) = self.argv.split_first().ok_or(ArgError(err))?;
        self.argv = rest;
        Ok(first)
    }

    /// Takes the next argument, which must be valid UTF-8.
    pub fn next_str(&mut self, err: &'static CStr) -> ArgResult<&'a str> {
        core::str::from_utf8(self.next(err)?).map_err(|_| ArgError(err))
    }

    /// Takes the next argument as an unsigned decimal number.
    pub fn next_u64(&mut self, err: &'static CStr) -> ArgResult<u64> {
        parse_u64(self.next(err)?).ok_or(ArgError(err))
    }

    /// Takes the next argument as an unsigned decimal number in `min..=max`.
    pub fn next_u64_in(&mut self, min: u64, max: u64, err: &'static CStr) -> ArgResult<u64> {
        let v = self.next_u64(err)?;
        if v < min || v > max {
            return Err(ArgError(err));
        }
        Ok(v)
    }

    /// Takes the next argument as a `u32` in `min..=max`.
    pub fn next_u32_in(&mut self, min: u32, max: u32, err: &'static CStr) -> ArgResult<u32> {
        // `max` fits in u32, so the narrowing cannot fail once the range check passed.
        Ok(self.next_u64_in(min.into(), max.into(), err)? as u32)
    }

    /// Reads an optional-argument group: a count (at most `max`) followed by that many arguments,
    /// like `dm_read_arg_group`. Returns the group; the arguments after it stay in `self`.
    pub fn group(&mut self, max: u32, err: &'static CStr) -> ArgResult<Args<'a>> {
        let n = self.next_u32_in(0, max, err)? as usize;
        if n > self.argv.len() {
            return Err(ArgError(err));
        }
        let (group, rest) = self.argv.split_at(n);
        self.argv = rest;
        Ok(Args { argv: group })
    }

    /// Fails with `err` unless every argument has been consumed.
    pub fn finish(&self, err: &'static CStr) -> ArgResult<()> {
        if self.argv.is_empty() {
            Ok(())
        } else {
            Err(ArgError(err))
        }
    }
}

/// Parses an unsigned decimal number: digits only, no sign, no spaces, no overflow.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(d.into())
    })
}

/// Decodes a hex string into `out`; its length must be exactly `2 * out.len()`.
pub fn parse_hex_exact(s: &[u8], out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = (hi << 4 | lo) as u8;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &CStr = c"bad";

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        for bad in [&b""[..], b"-1", b"+1", b" 1", b"1 ", b"12x", b"0x10"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn shifting_and_groups() {
        let argv: [&[u8]; 6] = [b"/dev/sda", b"8", b"2", b"a", b"b", b"tail"];
        let mut a = Args::new(&argv);
        assert_eq!(a.next(E).unwrap(), b"/dev/sda");
        assert_eq!(a.next_u64_in(0, 8, E).unwrap(), 8);
        let mut g = a.group(10, E).unwrap();
        assert_eq!(g.remaining(), 2);
        assert_eq!(g.next_str(E).unwrap(), "a");
        assert_eq!(a.next(E).unwrap(), b"tail");
        assert!(a.finish(E).is_ok());
        assert_eq!(a.next(E), Err(ArgError(E)));
    }

    #[test]
    fn group_errors() {
        let argv: [&[u8]; 2] = [b"3", b"x"];
        assert!(
            Args::new(&argv).group(10, E).is_err(),
            "count larger than what follows"
        );
        let argv: [&[u8]; 2] = [b"1", b"x"];
        assert!(Args::new(&argv).group(0, E).is_err(), "count above max");
        let argv: [&[u8]; 1] = [b"x"];
        assert!(Args::new(&argv).finish(E).is_err());
        assert!(Args::new(&argv).next_u64_in(1, 2, E).is_err());
    }

    #[test]
    fn hex() {
        let mut out = [0u8; 3];
        assert!(parse_hex_exact(b"00aBff", &mut out).is_some());
        assert_eq!(out, [0, 0xab, 0xff]);
        assert!(parse_hex_exact(b"00ab", &mut out).is_none());
        assert!(parse_hex_exact(b"00abfg", &mut out).is_none());
    }
}
