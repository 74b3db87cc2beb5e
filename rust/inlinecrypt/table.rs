// SPDX-License-Identifier: GPL-2.0

//! The dm-inlinecrypt table line: parsing, the table line written back, and the data unit
//! numbers (DUNs) of bios.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`.
//!
//! ```text
//! <cipher> <key> <iv_offset> <device path> <offset> [<#opt_params> <opt_params>...]
//! ```
//!
//! [`parse`] follows dm-inlinecrypt's `inlinecrypt_ctr` step by step and reports its messages
//! (`ti->error`) in its order. The two steps that need the kernel (reading a key from the
//! keyring, looking the device up) are asked of an [`InlineEnv`] where dm-inlinecrypt takes them,
//! so that a line with several faults is refused for the same one.
//!
//! Numbers are read as the kernel's `sscanf("%u")`/`"%llu"` reads them: decimal digits only after
//! optional white space, wrapping on overflow.

use core::ffi::CStr;
use core::fmt::{self, Write};

use crate::dm_args::{ArgError, ArgResult, Args};

/// 512-byte sectors.
pub const SECTOR_SHIFT: u32 = 9;

/// Largest key blk-crypto takes (`BLK_CRYPTO_MAX_ANY_KEY_SIZE`: a hardware-wrapped key).
pub const MAX_KEY_SIZE: usize = 128;

/// Largest encryption sector (data unit).
pub const MAX_SECTOR_SIZE: u32 = 4096;

/// Most optional arguments (dm-inlinecrypt's group limit).
const MAX_OPT_ARGS: u32 = 4;

// dm-inlinecrypt's messages.
const NOT_ENOUGH_ARGS: ArgError = ArgError(c"Not enough arguments");
const BAD_CIPHER: ArgError = ArgError(c"Unsupported cipher");
const BAD_KEY_SIZE: ArgError = ArgError(c"Cannot parse key size");
const BAD_KEY: ArgError = ArgError(c"Malformed key string");
const BAD_IV_OFFSET: ArgError = ArgError(c"Invalid iv_offset sector");
const NO_DEVICE: ArgError = ArgError(c"Device lookup failed");
const BAD_START: ArgError = ArgError(c"Invalid start sector");
const BAD_OPT_COUNT: &CStr = c"Invalid number of feature args";
const BAD_KEY_TYPE: ArgError = ArgError(c"Invalid block key type");
const BAD_SECTOR_SIZE: ArgError = ArgError(c"Invalid sector_size");
const BAD_OPT: ArgError = ArgError(c"Invalid feature arguments");
const NO_IV_LARGE_SECTORS: ArgError = ArgError(c"iv_large_sectors must be specified");
const BAD_LEN: ArgError = ArgError(c"Device size is not a multiple of sector_size");
const BAD_IV_ALIGN: ArgError = ArgError(c"Wrong alignment of iv_offset sector");
// Ours: dm-inlinecrypt ignores what follows the optional arguments, and lets `iv_offset + len`
// wrap (its I/O then fails with a warning).
const TOO_MANY_ARGS: ArgError = ArgError(c"Too many arguments");
const IV_OFFSET_OVERFLOW: ArgError = ArgError(c"Invalid iv_offset sector: iv_offset + length overflows");

/// dm-crypt's options, which dm-inlinecrypt does not have: refused by name.
const DM_CRYPT_ONLY: [(&str, &CStr); 7] = [
    ("same_cpu_crypt", c"Unsupported feature argument same_cpu_crypt (dm-crypt only)"),
    ("submit_from_crypt_cpus", c"Unsupported feature argument submit_from_crypt_cpus (dm-crypt only)"),
    ("no_read_workqueue", c"Unsupported feature argument no_read_workqueue (dm-crypt only)"),
    ("no_write_workqueue", c"Unsupported feature argument no_write_workqueue (dm-crypt only)"),
    ("high_priority", c"Unsupported feature argument high_priority (dm-crypt only)"),
    ("integrity:", c"Unsupported feature argument integrity (dm-crypt only)"),
    ("integrity_key_size:", c"Unsupported feature argument integrity_key_size (dm-crypt only)"),
];

/// The kernel side's refusal of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// The kernel's side of the constructor.
pub trait InlineEnv {
    /// Reads the `logon` key `description` from the keyring into `out`; its payload must be
    /// exactly `out.len()` bytes long.
    fn logon_key(&mut self, description: &[u8], out: &mut [u8]) -> Result<(), Refused>;
    /// Looks the device up (`dm_get_device`).
    fn get_device(&mut self, path: &[u8]) -> Result<(), Refused>;
}

/// The encryption modes blk-crypto offers that dm-inlinecrypt names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// `aes-xts-plain64`: blk-crypto's AES-256-XTS.
    AesXtsPlain64,
}

impl Cipher {
    const NAMES: [(Self, &'static str); 1] = [(Self::AesXtsPlain64, "aes-xts-plain64")];

    /// The name on the table line.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("", |(_, n)| n)
    }

    fn from_name(name: &[u8]) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map(|(c, _)| *c)
    }
}

/// The type of the key as the block layer sees it (`keytype:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// `keytype:raw` (the default): the key itself.
    Raw,
    /// `keytype:hw-wrapped`: a key only the inline encryption hardware can unwrap.
    HwWrapped,
}

/// Where the key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// In hex on the table line.
    Hex,
    /// `:<size>:logon:<description>`: a `logon` key of the kernel keyring.
    Logon {
        /// The key's description.
        description: &'a [u8],
    },
}

/// What a table line configures, apart from the key bytes and the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The cipher.
    pub cipher: Cipher,
    /// Key size in bytes (the key is in the caller's buffer).
    pub key_size: u32,
    /// Type of the key.
    pub key_type: KeyType,
    /// Sectors (512 bytes) added to the target's sector before the DUN is computed.
    pub iv_offset: u64,
    /// First sector of the device used.
    pub start: u64,
    /// Whether discards are passed down.
    pub allow_discards: bool,
    /// Encryption sector (data unit) in bytes: 512 to 4096, a power of two.
    pub sector_size: u32,
    /// The largest DUN of the target.
    pub max_dun: u64,
    /// Bytes of DUN the key is set up for (at least 1).
    pub dun_bytes: u32,
}

/// A parsed table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table<'a> {
    /// The configuration.
    pub config: Config,
    /// Where the key came from.
    pub key: KeySource<'a>,
    /// The device path as given.
    pub device: &'a [u8],
}

fn is_space(c: u8) -> bool {
    // The kernel's isspace(): space, \t \n \v \f \r, and Latin-1 0xa0.
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// Reads an unsigned decimal number as the kernel's `sscanf` does for `%u`/`%llu`: white space
/// skipped, then at least one digit, wrapping on overflow. Returns the value and what follows.
pub fn scan_decimal(s: &[u8]) -> Option<(u64, &[u8])> {
    let s = &s[s.iter().take_while(|&&c| is_space(c)).count()..];
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let v = s[..n].iter().fold(0u64, |acc, &c| {
        acc.wrapping_mul(10).wrapping_add(u64::from(c - b'0'))
    });
    Some((v, &s[n..]))
}

/// `sscanf(s, "%llu%c", ...) == 1`: a number and nothing after it.
fn scan_u64_exact(s: &[u8]) -> Option<u64> {
    match scan_decimal(s)? {
        (v, []) => Some(v),
        _ => None,
    }
}

/// dm-inlinecrypt's `get_key_size` and `inlinecrypt_get_key`: decodes the key argument into
/// `key_out` (hex), or has `env` read it from the keyring; returns its size and source.
fn parse_key<'a>(
    arg: &'a [u8],
    key_out: &mut [u8; MAX_KEY_SIZE],
    env: &mut impl InlineEnv,
) -> ArgResult<(u32, KeySource<'a>)> {
    let Some(rest) = arg.strip_prefix(b":") else {
        // Hex: an even, non-zero number of characters, at most two per key byte.
        if arg.is_empty() || arg.len() % 2 != 0 || arg.len() > 2 * MAX_KEY_SIZE {
            return Err(BAD_KEY_SIZE);
        }
        let size = arg.len() / 2;
        for (o, pair) in key_out.iter_mut().zip(arg.chunks_exact(2)) {
            let hi = (pair[0] as char).to_digit(16).ok_or(BAD_KEY)?;
            let lo = (pair[1] as char).to_digit(16).ok_or(BAD_KEY)?;
            *o = (hi << 4 | lo) as u8;
        }
        return Ok((size as u32, KeySource::Hex));
    };
    // `:<size>:<type>:<description>`; the size is read as `%u` into an `int`.
    if !rest.contains(&b':') {
        return Err(BAD_KEY_SIZE);
    }
    let (value, tail) = scan_decimal(rest).ok_or(BAD_KEY_SIZE)?;
    let Some(spec) = tail.strip_prefix(b":") else {
        return Err(BAD_KEY_SIZE);
    };
    let size = value as u32;
    if size as i32 as i64 != i64::from(size) {
        return Err(BAD_KEY_SIZE);
    }
    if size as usize > MAX_KEY_SIZE {
        return Err(BAD_KEY);
    }
    // `<type>:<description>`: no white space anywhere, a type, a description; only `logon`.
    if spec.iter().any(|&c| is_space(c)) {
        return Err(BAD_KEY);
    }
    let sep = spec.iter().position(|&c| c == b':').ok_or(BAD_KEY)?;
    let (key_type, description) = (&spec[..sep], &spec[sep + 1..]);
    if key_type != b"logon" || description.is_empty() {
        return Err(BAD_KEY);
    }
    env.logon_key(description, &mut key_out[..size as usize])
        .map_err(|_| BAD_KEY)?;
    Ok((size, KeySource::Logon { description }))
}

/// The optional arguments: (key type, allow_discards, sector_size, iv_large_sectors).
fn parse_options(opts: &mut Args<'_>) -> ArgResult<(KeyType, bool, u32, bool)> {
    let (mut key_type, mut discards, mut sector_size, mut large) =
        (KeyType::Raw, false, 1u32 << SECTOR_SHIFT, false);
    while !opts.is_empty() {
        let opt = opts.next(BAD_OPT.0)?;
        if let Some(val) = opt.strip_prefix(b"keytype:") {
            key_type = match val {
                b"raw" => KeyType::Raw,
                b"hw-wrapped" => KeyType::HwWrapped,
                _ => return Err(BAD_KEY_TYPE),
            };
        } else if opt == b"allow_discards" {
            discards = true;
        } else if let Some(size) = opt.strip_prefix(b"sector_size:").and_then(scan_u64_exact) {
            // `%u`: the value wraps to 32 bits.
            let size = size as u32;
            if !(512..=MAX_SECTOR_SIZE).contains(&size) || !size.is_power_of_two() {
                return Err(BAD_SECTOR_SIZE);
            }
            sector_size = size;
        } else if opt == b"iv_large_sectors" {
            large = true;
        } else if let Some((_, msg)) = DM_CRYPT_ONLY
            .iter()
            .find(|(name, _)| opt == name.as_bytes() || (name.ends_with(':') && opt.starts_with(name.as_bytes())))
        {
            return Err(ArgError(msg));
        } else {
            return Err(BAD_OPT);
        }
    }
    Ok((key_type, discards, sector_size, large))
}

/// Parses a table line for a target of `len` sectors, as dm-inlinecrypt's constructor: the key
/// goes into `key_out` (its first `config.key_size` bytes; the caller wipes it), the device is
/// looked up by `env` at dm-inlinecrypt's step.
pub fn parse<'a>(
    args: &mut Args<'a>,
    len: u64,
    key_out: &mut [u8; MAX_KEY_SIZE],
    env: &mut impl InlineEnv,
) -> ArgResult<Table<'a>> {
    if args.remaining() < 5 {
        return Err(NOT_ENOUGH_ARGS);
    }
    let cipher = Cipher::from_name(args.next(NOT_ENOUGH_ARGS.0)?).ok_or(BAD_CIPHER)?;
    let (key_size, key) = parse_key(args.next(NOT_ENOUGH_ARGS.0)?, key_out, env)?;
    let iv_offset = scan_u64_exact(args.next(NOT_ENOUGH_ARGS.0)?).ok_or(BAD_IV_OFFSET)?;
    let device = args.next(NOT_ENOUGH_ARGS.0)?;
    env.get_device(device).map_err(|_| NO_DEVICE)?;
    let start = scan_u64_exact(args.next(NOT_ENOUGH_ARGS.0)?).ok_or(BAD_START)?;
    let (key_type, allow_discards, sector_size, large) = if args.is_empty() {
        (KeyType::Raw, false, 1 << SECTOR_SHIFT, false)
    } else {
        let mut opts = args.group(MAX_OPT_ARGS, BAD_OPT_COUNT)?;
        args.finish(TOO_MANY_ARGS.0)?;
        parse_options(&mut opts)?
    };
    // dm-inlinecrypt only has `iv_large_sectors` DUNs (dm-crypt's default counts 512-byte
    // sectors whatever the sector size).
    if sector_size != 1 << SECTOR_SHIFT && !large {
        return Err(NO_IV_LARGE_SECTORS);
    }
    // A power of two (checked above): masks and shifts, no division.
    let shift = sector_size.trailing_zeros() - SECTOR_SHIFT;
    let unit_mask = (1u64 << shift) - 1;
    if len & unit_mask != 0 {
        return Err(BAD_LEN);
    }
    if iv_offset & unit_mask != 0 {
        return Err(BAD_IV_ALIGN);
    }
    // `len` is at least 1 (device-mapper refuses empty targets).
    let last = iv_offset
        .checked_add(len.max(1) - 1)
        .ok_or(IV_OFFSET_OVERFLOW)?;
    let max_dun = last >> shift;
    // Bytes needed for the largest DUN; at least one (dm-inlinecrypt asks blk-crypto for none
    // when the largest DUN is 0, which blk-crypto refuses).
    let dun_bytes = (64 - max_dun.leading_zeros()).div_ceil(8).max(1);
    Ok(Table {
        config: Config {
            cipher,
            key_size,
            key_type,
            iv_offset,
            start,
            allow_discards,
            sector_size,
            max_dun,
            dun_bytes,
        },
        key,
        device,
    })
}

impl Config {
    /// The DUN of the data unit that starts at sector `rel` of the target (512-byte sectors):
    /// `(iv_offset + rel) / (sector_size / 512)`, as dm-crypt's plain64 IV with
    /// `iv_large_sectors`. `None` when `rel` does not start a data unit, or lies past the target
    /// (the bio is then failed).
    pub fn dun(&self, rel: u64) -> Option<u64> {
        // sector_size is a power of two (checked when parsed): a mask and a shift.
        let shift = self.sector_size.trailing_zeros() - SECTOR_SHIFT;
        let sector = self.iv_offset.checked_add(rel)?;
        if sector & ((1 << shift) - 1) != 0 {
            return None;
        }
        let dun = sector >> shift;
        (dun <= self.max_dun).then_some(dun)
    }

    /// Writes the table line (`dmsetup table`): `<cipher> <key> <iv_offset> <device> <start>`
    /// and the optional arguments that differ from the defaults. `key` writes the key argument.
    pub fn write_table<W: Write>(
        &self,
        out: &mut W,
        key: impl FnOnce(&mut W) -> fmt::Result,
        device: &str,
    ) -> fmt::Result {
        write!(out, "{} ", self.cipher.name())?;
        key(out)?;
        write!(out, " {} {} {}", self.iv_offset, device, self.start)?;
        let large = self.sector_size != 1 << SECTOR_SHIFT;
        let hw = self.key_type == KeyType::HwWrapped;
        let n = u32::from(self.allow_discards) + 2 * u32::from(large) + u32::from(hw);
        if n > 0 {
            write!(out, " {n}")?;
            if hw {
                out.write_str(" keytype:hw-wrapped")?;
            }
            if self.allow_discards {
                out.write_str(" allow_discards")?;
            }
            if large {
                write!(out, " sector_size:{} iv_large_sectors", self.sector_size)?;
            }
        }
        Ok(())
    }
}

/// Writes `bytes` in lower-case hex (the key on the table line, as `%*phN`).
pub fn write_hex<W: Write>(out: &mut W, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(out, "{b:02x}"))
}

/// Writes a keyring key argument: `:<size>:logon:<description>`.
pub fn write_keyring_key<W: Write>(out: &mut W, size: u32, description: &[u8]) -> fmt::Result {
    write!(out, ":{size}:logon:")?;
    // The description has no white space (checked) and was given as text on the table line.
    description
        .iter()
        .try_for_each(|&c| out.write_char(char::from(c)))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    #[derive(Default)]
    struct Env {
        keys: Vec<(&'static [u8], Vec<u8>)>,
        devices: Vec<&'static [u8]>,
        asked_device: bool,
    }

    impl InlineEnv for Env {
        fn logon_key(&mut self, description: &[u8], out: &mut [u8]) -> Result<(), Refused> {
            let (_, k) = self
                .keys
                .iter()
                .find(|(d, _)| *d == description)
                .ok_or(Refused)?;
            if k.len() != out.len() {
                return Err(Refused);
            }
            out.copy_from_slice(k);
            Ok(())
        }
        fn get_device(&mut self, path: &[u8]) -> Result<(), Refused> {
            self.asked_device = true;
            self.devices.contains(&path).then_some(()).ok_or(Refused)
        }
    }

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
                       202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

    fn env() -> Env {
        Env {
            keys: std::vec![(b"fde:k".as_slice(), (0..64).collect())],
            devices: std::vec![b"/dev/loop0".as_slice(), b"7:0".as_slice()],
            asked_device: false,
        }
    }

    fn try_parse(line: &str, len: u64) -> ArgResult<(Config, Vec<u8>, String)> {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let mut args = Args::new(&words);
        let mut key = [0u8; MAX_KEY_SIZE];
        let t = parse(&mut args, len, &mut key, &mut env())?;
        let src = match t.key {
            KeySource::Hex => String::from("hex"),
            KeySource::Logon { description } => String::from_utf8(description.to_vec()).unwrap(),
        };
        Ok((t.config, key[..t.config.key_size as usize].to_vec(), src))
    }

    fn refused(line: &str, len: u64) -> &'static CStr {
        try_parse(line, len).expect_err(line).0
    }

    #[test]
    fn minimal_line() {
        let (c, key, src) = try_parse(&std::format!("aes-xts-plain64 {KEY} 0 /dev/loop0 0"), 64).unwrap();
        assert_eq!(key, (0..64).collect::<Vec<u8>>());
        assert_eq!(src, "hex");
        assert_eq!(c.cipher, Cipher::AesXtsPlain64);
        assert_eq!((c.key_size, c.key_type, c.iv_offset, c.start), (64, KeyType::Raw, 0, 0));
        assert_eq!((c.allow_discards, c.sector_size), (false, 512));
        assert_eq!((c.max_dun, c.dun_bytes), (63, 1));
    }

    #[test]
    fn options_and_dun_geometry() {
        let line = std::format!(
            "aes-xts-plain64 {KEY} 2048 7:0 100 4 keytype:raw allow_discards sector_size:4096 iv_large_sectors"
        );
        let (c, _, _) = try_parse(&line, 1 << 21).unwrap();
        assert!(c.allow_discards);
        assert_eq!(c.sector_size, 4096);
        assert_eq!(c.start, 100);
        // DUNs 256 .. 256 + 2^21 / 8 - 1.
        assert_eq!(c.max_dun, 256 + (1 << 18) - 1);
        assert_eq!(c.dun_bytes, 3);
        assert_eq!(c.dun(0), Some(256));
        assert_eq!(c.dun(8), Some(257));
        assert_eq!(c.dun(4), None, "not at a data unit boundary");
        assert_eq!(c.dun((1 << 21) - 8), Some(c.max_dun));
        assert_eq!(c.dun(1 << 21), None, "past the target");
        // 512-byte units: the DUN is the sector plus iv_offset.
        let (c, _, _) = try_parse(&std::format!("aes-xts-plain64 {KEY} 5 7:0 0"), 1000).unwrap();
        assert_eq!((c.dun(0), c.dun(3), c.max_dun, c.dun_bytes), (Some(5), Some(8), 1004, 2));
        // One data unit at DUN 0 still gets a DUN byte.
        let (c, _, _) = try_parse(&std::format!("aes-xts-plain64 {KEY} 0 7:0 0"), 1).unwrap();
        assert_eq!((c.max_dun, c.dun_bytes), (0, 1));
        // The largest DUNs need all eight bytes.
        let (c, _, _) = try_parse(&std::format!("aes-xts-plain64 {KEY} 18446744073709551000 7:0 0"), 8).unwrap();
        assert_eq!(c.dun_bytes, 8);
    }

    #[test]
    fn keyring_key() {
        let (c, key, src) = try_parse("aes-xts-plain64 :64:logon:fde:k 0 7:0 0", 8).unwrap();
        assert_eq!((c.key_size, src.as_str()), (64, "fde:k"));
        assert_eq!(key, (0..64).collect::<Vec<u8>>());
        for (line, msg) in [
            ("aes-xts-plain64 :32:logon:fde:k 0 7:0 0", BAD_KEY.0),
            ("aes-xts-plain64 :64:logon:fde:missing 0 7:0 0", BAD_KEY.0),
            ("aes-xts-plain64 :64:user:fde:k 0 7:0 0", BAD_KEY.0),
            ("aes-xts-plain64 :64:logo:fde:k 0 7:0 0", BAD_KEY.0),
            ("aes-xts-plain64 :64:logon: 0 7:0 0", BAD_KEY.0),
            ("aes-xts-plain64 :64:logon 0 7:0 0", BAD_KEY.0),
            ("aes-xts-plain64 :129:logon:fde:k 0 7:0 0", BAD_KEY.0),
            ("aes-xts-plain64 :64 0 7:0 0", BAD_KEY_SIZE.0),
            ("aes-xts-plain64 :x:logon:fde:k 0 7:0 0", BAD_KEY_SIZE.0),
            ("aes-xts-plain64 :64x:logon:fde:k 0 7:0 0", BAD_KEY_SIZE.0),
            ("aes-xts-plain64 :-64:logon:fde:k 0 7:0 0", BAD_KEY_SIZE.0),
            ("aes-xts-plain64 :2147483648:logon:fde:k 0 7:0 0", BAD_KEY_SIZE.0),
            // `%u` wraps: 2^32 + 64 is 64.
            ("aes-xts-plain64 :4294967360:logon:fde:k 0 7:0 0", c"ok"),
        ] {
            match try_parse(line, 8) {
                Ok(_) => assert_eq!(msg, c"ok", "{line}"),
                Err(e) => assert_eq!(e.0, msg, "{line}"),
            }
        }
    }

    #[test]
    fn refusals_in_dm_inlinecrypts_order() {
        let k = KEY;
        for (line, msg) in [
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0"), NOT_ENOUGH_ARGS.0),
            (std::format!("aes-cbc-essiv:sha256 {k} x /dev/loop0 0"), BAD_CIPHER.0),
            (std::format!("aes-xts-plain {k} 0 /dev/loop0 0"), BAD_CIPHER.0),
            (std::format!("aes-xts-plain64 {k}0 x nodev 0"), BAD_KEY_SIZE.0),
            (String::from("aes-xts-plain64 - 0 /dev/loop0 0"), BAD_KEY_SIZE.0),
            (std::format!("aes-xts-plain64 {k}{k}{k}{k}00 0 /dev/loop0 0"), BAD_KEY_SIZE.0),
            (std::format!("aes-xts-plain64 {}zz x nodev 0", &k[2..]), BAD_KEY.0),
            (std::format!("aes-xts-plain64 {k} x nodev x"), BAD_IV_OFFSET.0),
            (std::format!("aes-xts-plain64 {k} -1 /dev/loop0 0"), BAD_IV_OFFSET.0),
            (std::format!("aes-xts-plain64 {k} 1x /dev/loop0 0"), BAD_IV_OFFSET.0),
            (std::format!("aes-xts-plain64 {k} 0 nodev x"), NO_DEVICE.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 x"), BAD_START.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 5 a b c d e"), BAD_OPT_COUNT),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 2 allow_discards"), BAD_OPT_COUNT),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 1 allow_discards extra"), TOO_MANY_ARGS.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 1 keytype:"), BAD_KEY_TYPE.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 1 keytype:wrapped"), BAD_KEY_TYPE.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 2 sector_size:1024 iv_large_sectors"), c"ok"),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 2 sector_size:8192 iv_large_sectors"), BAD_SECTOR_SIZE.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 2 sector_size:256 iv_large_sectors"), BAD_SECTOR_SIZE.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 2 sector_size:1536 iv_large_sectors"), BAD_SECTOR_SIZE.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 1 sector_size:4096x"), BAD_OPT.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 1 sector_size:4096"), NO_IV_LARGE_SECTORS.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 1 same_cpu_crypt"), c"Unsupported feature argument same_cpu_crypt (dm-crypt only)"),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 1 integrity:28:aead"), c"Unsupported feature argument integrity (dm-crypt only)"),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 1 bogus"), BAD_OPT.0),
            (std::format!("aes-xts-plain64 {k} 0 /dev/loop0 0 2 sector_size:4096 iv_large_sectors"), c"ok"),
            (std::format!("aes-xts-plain64 {k} 4 /dev/loop0 0 2 sector_size:4096 iv_large_sectors"), BAD_IV_ALIGN.0),
            (std::format!("aes-xts-plain64 {k} 18446744073709551615 /dev/loop0 0"), IV_OFFSET_OVERFLOW.0),
        ] {
            match try_parse(&line, 64) {
                Ok(_) => assert_eq!(msg, c"ok", "{line}"),
                Err(e) => assert_eq!(e.0, msg, "{line}"),
            }
        }
        assert_eq!(
            refused(&std::format!("aes-xts-plain64 {KEY} 0 7:0 0 2 sector_size:4096 iv_large_sectors"), 12),
            BAD_LEN.0
        );
        // The device is looked up before the start sector is read, the key before both.
        let words: Vec<&[u8]> = ["aes-xts-plain64", "zz", "0", "7:0", "0"].map(str::as_bytes).to_vec();
        let mut e = env();
        let mut key = [0u8; MAX_KEY_SIZE];
        assert_eq!(parse(&mut Args::new(&words), 8, &mut key, &mut e).unwrap_err(), BAD_KEY);
        assert!(!e.asked_device);
    }

    #[test]
    fn numbers_as_sscanf() {
        assert_eq!(scan_decimal(b"12:x"), Some((12, &b":x"[..])));
        assert_eq!(scan_decimal(b" 7"), Some((7, &b""[..])));
        assert_eq!(scan_decimal(b"18446744073709551616"), Some((0, &b""[..])));
        assert_eq!(scan_decimal(b"+1"), None);
        assert_eq!(scan_decimal(b""), None);
        assert_eq!(scan_u64_exact(b"5 "), None);
    }

    #[test]
    fn table_line_round_trips() {
        for line in [
            std::format!("aes-xts-plain64 {KEY} 0 7:0 0"),
            std::format!("aes-xts-plain64 {KEY} 16 7:0 8 3 allow_discards sector_size:4096 iv_large_sectors"),
            String::from("aes-xts-plain64 :64:logon:fde:k 0 7:0 0 1 allow_discards"),
        ] {
            let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            let mut key = [0u8; MAX_KEY_SIZE];
            let t = parse(&mut Args::new(&words), 64, &mut key, &mut env()).unwrap();
            let mut out = String::new();
            t.config
                .write_table(
                    &mut out,
                    |o| match t.key {
                        KeySource::Hex => write_hex(o, &key[..t.config.key_size as usize]),
                        KeySource::Logon { description } => {
                            write_keyring_key(o, t.config.key_size, description)
                        }
                    },
                    "7:0",
                )
                .unwrap();
            assert_eq!(out, line);
        }
        // keytype:raw is the default and not written; hw-wrapped is.
        let line = std::format!("aes-xts-plain64 {KEY} 0 7:0 0 2 keytype:hw-wrapped keytype:raw");
        let (c, _, _) = try_parse(&line, 8).unwrap();
        assert_eq!(c.key_type, KeyType::Raw);
        let line = std::format!("aes-xts-plain64 {KEY} 0 7:0 0 1 keytype:hw-wrapped");
        let (c, _, _) = try_parse(&line, 8).unwrap();
        let mut out = String::new();
        c.write_table(&mut out, |o| o.write_str("K"), "7:0").unwrap();
        assert_eq!(out, "aes-xts-plain64 K 0 7:0 0 1 keytype:hw-wrapped");
    }
}
