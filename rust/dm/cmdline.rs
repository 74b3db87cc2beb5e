// SPDX-License-Identifier: GPL-2.0

//! Reading module parameters from the kernel command line (pure: host-tested).
//!
//! With `upstream_names=1` dm_rust stands in for the kernel's C modules of those names, so it
//! honours their command-line parameters too (`dm_verity.require_signatures=1`), which the kernel
//! and modprobe would only hand to a module of that name.

/// The value of the boolean parameter `<module>.<param>` on the kernel command line `cmdline`,
/// read as the kernel reads it: module names match with `-` and `_` alike, the last occurrence
/// wins, a bare `<module>.<param>` means true, values are read like `kstrtobool` (`1`, `y`, `on`
/// are true; `0`, `n`, `off` false), and nothing after `--` is a kernel parameter. `None` when the
/// parameter is not given; `Some(Err(()))` when its value is not a boolean.
pub fn bool_param(cmdline: &[u8], module: &[u8], param: &[u8]) -> Option<Result<bool, ()>> {
    let mut found = None;
    for word in cmdline.split(|c| c.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
        if word == b"--" {
            break;
        }
        let (name, value) = match word.iter().position(|&c| c == b'=') {
            Some(i) => (&word[..i], Some(&word[i + 1..])),
            None => (word, None),
        };
        let Some(dot) = name.iter().position(|&c| c == b'.') else {
            continue;
        };
        if !same_module(&name[..dot], module) || &name[dot + 1..] != param {
            continue;
        }
        found = Some(match value {
            None => Ok(true),
            Some(v) => parse_bool(v),
        });
    }
    found
}

fn same_module(a: &[u8], b: &[u8]) -> bool {
    let norm = |c: u8| if c == b'-' { b'_' } else { c };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| norm(x) == norm(y))
}

/// `kstrtobool`'s reading of a value.
fn parse_bool(v: &[u8]) -> Result<bool, ()> {
    match v {
        [b'y' | b'Y' | b'1', ..] => Ok(true),
        [b'n' | b'N' | b'0', ..] => Ok(false),
        [b'o' | b'O', b'n' | b'N', ..] => Ok(true),
        [b'o' | b'O', b'f' | b'F', ..] => Ok(false),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::bool_param;

    const M: &[u8] = b"dm_verity";
    const P: &[u8] = b"require_signatures";

    #[test]
    fn absent() {
        assert_eq!(bool_param(b"root=/dev/sda1 quiet", M, P), None);
        assert_eq!(bool_param(b"", M, P), None);
        assert_eq!(bool_param(b"dm_verity.other=1 require_signatures=1", M, P), None);
    }

    #[test]
    fn values() {
        assert_eq!(bool_param(b"dm_verity.require_signatures=1", M, P), Some(Ok(true)));
        assert_eq!(bool_param(b"quiet dm_verity.require_signatures=Y x", M, P), Some(Ok(true)));
        assert_eq!(bool_param(b"dm_verity.require_signatures=on", M, P), Some(Ok(true)));
        assert_eq!(bool_param(b"dm_verity.require_signatures=0", M, P), Some(Ok(false)));
        assert_eq!(bool_param(b"dm_verity.require_signatures=off", M, P), Some(Ok(false)));
        assert_eq!(bool_param(b"dm_verity.require_signatures", M, P), Some(Ok(true)));
        assert_eq!(bool_param(b"dm_verity.require_signatures=maybe", M, P), Some(Err(())));
    }

    #[test]
    fn dash_and_underscore_last_wins_and_init_args() {
        assert_eq!(bool_param(b"dm-verity.require_signatures=1", M, P), Some(Ok(true)));
        assert_eq!(
            bool_param(b"dm_verity.require_signatures=1 dm-verity.require_signatures=0", M, P),
            Some(Ok(false))
        );
        assert_eq!(bool_param(b"quiet -- dm_verity.require_signatures=1", M, P), None);
        assert_eq!(bool_param(b"dm_verityx.require_signatures=1", M, P), None);
        assert_eq!(bool_param(b"dm_verity.require_signatures_x=1", M, P), None);
        assert_eq!(bool_param(b"\tdm_verity.require_signatures=1\n", M, P), Some(Ok(true)));
    }
}
