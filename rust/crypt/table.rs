// SPDX-License-Identifier: GPL-2.0

//! The dm-crypt table line: parsing, and the table, status and IMA lines written back.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`.
//!
//! ```text
//! <cipher> <key> <iv_offset> <device path> <offset> [<#opt_params> <opt_params>...]
//! ```
//!
//! [`CryptTable::parse`] follows dm-crypt's `crypt_ctr` step by step and reports its messages
//! (`ti->error`) in its order. The steps that need the kernel (allocating the cipher, loading the
//! key, looking the device up) are asked of a [`CryptEnv`] at the point where dm-crypt takes
//! them, so that a line with several faults is refused for the same one as by dm-crypt.
//!
//! dm-crypt's numbers are read with the kernel's `sscanf("%u")`/`"%llu"`, which take decimal
//! digits only and wrap on overflow; [`scan_decimal`] does the same, so that a line dm-crypt
//! accepts is accepted here with the same meaning.

use core::ffi::CStr;
use core::fmt::{self, Write};

use super::iv::{IvGen, IvMode, SECTOR_SHIFT};
use crate::dm_args::{ArgError, ArgResult, Args};

/// The crypto API's longest algorithm name plus its NUL (`CRYPTO_MAX_ALG_NAME`).
pub const MAX_ALG_NAME: usize = 128;

/// dm-crypt's `MAX_TAG_SIZE`: largest integrity tag.
pub const MAX_TAG_SIZE: u32 = 480;

/// Largest encryption sector.
pub const MAX_SECTOR_SIZE: u32 = 4096;

/// Most optional arguments (dm-crypt's group limit).
const MAX_OPT_ARGS: u32 = 9;

/// Largest key `:<bytes>:random` makes: far above any skcipher's key (`aes-xts` takes 64 bytes),
/// small enough never to be a large allocation.
pub const MAX_RANDOM_KEY_SIZE: u32 = 512;

// dm-crypt's messages.
const NOT_ENOUGH_ARGS: ArgError = ArgError(c"Not enough arguments");
const BAD_KEY_SIZE: ArgError = ArgError(c"Cannot parse key size");
const BAD_OPT_COUNT: &CStr = c"Invalid number of feature args";
const BAD_OPT: ArgError = ArgError(c"Invalid feature arguments");
const BAD_INTEGRITY: ArgError = ArgError(c"Invalid integrity arguments");
const BAD_INTEGRITY_PROFILE: ArgError = ArgError(c"Unknown integrity profile");
const BAD_INTEGRITY_KEY_SIZE: ArgError = ArgError(c"Invalid integrity_key_size argument");
const BAD_SECTOR_SIZE: ArgError = ArgError(c"Invalid feature value for sector_size");
const BAD_DEVICE_SIZE: ArgError = ArgError(c"Device size is not multiple of sector_size feature");
const BAD_CIPHER: ArgError = ArgError(c"Bad cipher specification");
const BAD_KEY_COUNT: ArgError = ArgError(c"Bad cipher key count specification");
const NO_IV: ArgError = ArgError(c"IV mechanism required");
const NO_ESSIV_DIGEST: ArgError = ArgError(c"Digest algorithm missing for ESSIV mode");
const NAME_TOO_LONG_OLD: ArgError = ArgError(c"Cannot allocate cipher strings");
const NAME_TOO_LONG_CAPI: ArgError = ArgError(c"Cannot allocate cipher string");
const BAD_AEAD: ArgError = ArgError(c"Invalid AEAD cipher spec");
const NO_TFM: ArgError = ArgError(c"Error allocating crypto tfm");
const BAD_IV_MODE: ArgError = ArgError(c"Invalid IV mode");
const BAD_KEY: ArgError = ArgError(c"Error decoding and setting key");
// Not dm-crypt's: it has no random key.
const BAD_RANDOM_KEY_SIZE: ArgError = ArgError(c"Invalid random key size (1 to 512 bytes)");
const BAD_RANDOM_KEY: ArgError = ArgError(c"Invalid random key (the form is :<bytes>:random)");
const BAD_IV: ArgError = ArgError(c"Error creating IV");
const BAD_IV_OFFSET: ArgError = ArgError(c"Invalid iv_offset sector");
const NO_DEVICE: ArgError = ArgError(c"Device lookup failed");
const BAD_START: ArgError = ArgError(c"Invalid device sector");

/// IV modes dm-crypt has and this target does not (yet), each refused by name.
const UNSUPPORTED_IV_MODES: [(&str, &CStr); 5] = [
    ("lmk", c"IV mode lmk is not supported"),
    ("tcw", c"IV mode tcw is not supported"),
    ("random", c"IV mode random is not supported"),
    ("eboiv", c"IV mode eboiv is not supported"),
    ("elephant", c"IV mode elephant is not supported"),
];

/// The kernel side's refusal of a step (the table line is then refused with dm-crypt's message
/// for that step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// The kernel's side of the constructor: what cannot be decided from the table line alone.
pub trait CryptEnv {
    /// Allocates `count` transforms of the crypto API skcipher `name` (dm-crypt's
    /// `crypt_alloc_tfms`); returns its IV size and block size in bytes.
    fn alloc_cipher(&mut self, name: &str, count: u32) -> Result<CipherInfo, Refused>;
    /// Loads the key into the transforms: decodes a hex key (checked to be hex already) or
    /// reads a keyring key of `size` bytes, then sets it (dm-crypt's `crypt_set_key` after its
    /// string checks). Called for an empty key (`-`) too: dm-crypt sets a zero-length key, which
    /// only keyless ciphers such as `ecb(cipher_null)` accept.
    fn set_key(&mut self, key: &Key<'_>, size: u32) -> Result<(), Refused>;
    /// Looks the device up (`dm_get_device`).
    fn get_device(&mut self, path: &[u8]) -> Result<(), Refused>;
}

/// What the crypto API tells of an allocated cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CipherInfo {
    /// IV size in bytes (0 for modes without IV, such as `ecb`).
    pub iv_size: u32,
    /// Block size in bytes.
    pub block_size: u32,
}

/// Kernel key types a keyring key can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// `logon`: readable by the kernel only (cryptsetup's choice).
    Logon,
    /// `user`.
    User,
    /// `encrypted`.
    Encrypted,
    /// `trusted`.
    Trusted,
}

impl KeyType {
    const NAMES: [(Self, &'static str); 4] = [
        (Self::Logon, "logon"),
        (Self::User, "user"),
        (Self::Encrypted, "encrypted"),
        (Self::Trusted, "trusted"),
    ];

    /// The type's name in the kernel (and on the table line).
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("", |(_, n)| n)
    }

    fn from_name(name: &[u8]) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map(|(t, _)| *t)
    }
}

/// The key argument, or the key of a `key set` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// `-`: no key (ciphers such as `ecb(cipher_null)`).
    Empty,
    /// The key in hex: exactly the first `2 * size` digits of the argument (dm-crypt ignores an
    /// odd last digit).
    Hex(&'a [u8]),
    /// `:<size>:<type>:<description>`: a key in the kernel keyring.
    Keyring {
        /// Its type.
        key_type: KeyType,
        /// Its description.
        description: &'a str,
    },
    /// `:<size>:random`: a key the constructor generates from the kernel's random source, for a
    /// throw-away device (not dm-crypt's: it refuses this form). Never shown, never set again.
    Random,
}

impl<'a> Key<'a> {
    /// Parses a key argument into the key and its size in bytes, as dm-crypt's `get_key_size`
    /// then `crypt_set_key` (up to the kernel's part). The error is the one `crypt_ctr` reports.
    pub fn parse(arg: &'a [u8]) -> ArgResult<(Self, u32)> {
        let Some(rest) = arg.strip_prefix(b":") else {
            let size = u32::try_from(arg.len() / 2).map_err(|_| BAD_KEY)?;
            if size == 0 {
                return if arg == b"-" {
                    Ok((Key::Empty, 0))
                } else {
                    Err(BAD_KEY)
                };
            }
            let hex = &arg[..2 * size as usize];
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(BAD_KEY);
            }
            return Ok((Key::Hex(hex), size));
        };
        // `<size>:` with nothing but digits before the colon; the size is an `int`.
        let colon = rest.iter().position(|&c| c == b':').ok_or(BAD_KEY_SIZE)?;
        let (value, tail) = scan_decimal(rest).ok_or(BAD_KEY_SIZE)?;
        if tail.first() != Some(&b':') {
            return Err(BAD_KEY_SIZE);
        }
        let size = u32::try_from(value as u32 as i32).map_err(|_| BAD_KEY_SIZE)?;
        let spec = &rest[colon + 1..];
        // `random`: no description; the size is read strictly (no wrapping, at most 3 digits).
        if spec == b"random" {
            if colon > 3 || !(1..=MAX_RANDOM_KEY_SIZE).contains(&size) {
                return Err(BAD_RANDOM_KEY_SIZE);
            }
            return Ok((Key::Random, size));
        }
        if spec.starts_with(b"random:") {
            return Err(BAD_RANDOM_KEY);
        }
        // `<type>:<description>`, no whitespace, description not empty.
        if size == 0 || spec.iter().any(|c| is_space(*c)) {
            return Err(BAD_KEY);
        }
        let sep = spec.iter().position(|&c| c == b':').ok_or(BAD_KEY)?;
        let (name, description) = (&spec[..sep], &spec[sep + 1..]);
        let key_type = KeyType::from_name(name).ok_or(BAD_KEY)?;
        if description.is_empty() {
            return Err(BAD_KEY);
        }
        let description = core::str::from_utf8(description).map_err(|_| BAD_KEY)?;
        Ok((
            Key::Keyring {
                key_type,
                description,
            },
            size,
        ))
    }
}

/// The key as `dmsetup table` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShownKey<'k> {
    /// The key bytes in memory (zeroes after `key wipe`), written in lowercase hex, or `-` when
    /// empty.
    Bytes(&'k [u8]),
    /// A keyring key: written `:<size>:<type>:<description>`.
    Keyring {
        /// Key size in bytes.
        size: u32,
        /// Its type.
        key_type: KeyType,
        /// Its description.
        description: &'k str,
    },
    /// A random key: written `:<size>:random`, never its bytes.
    Random {
        /// Key size in bytes.
        size: u32,
    },
}

/// `integrity:<tag_size>:<profile>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Integrity<'a> {
    /// Bytes of integrity tag per sector.
    pub tag_size: u32,
    /// `aead` or `none`, as given.
    pub profile: &'a str,
}

/// A parsed dm-crypt table line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptTable<'a> {
    cipher_string: &'a str,
    cipher_api: [u8; MAX_ALG_NAME],
    cipher_api_len: usize,
    tfms_count: u32,
    iv_mode: Option<IvMode>,
    iv_opts: Option<&'a str>,
    iv_mode_ignored: bool,
    cipher: CipherInfo,
    key: Key<'a>,
    key_size: u32,
    iv_offset: u64,
    dev: &'a [u8],
    start: u64,
    allow_discards: bool,
    same_cpu_crypt: bool,
    high_priority: bool,
    submit_from_crypt_cpus: bool,
    no_read_workqueue: bool,
    no_write_workqueue: bool,
    integrity: Option<Integrity<'a>>,
    integrity_key_size: Option<u32>,
    sector_size: u32,
    iv_large_sectors: bool,
}

/// The optional arguments, before the cipher is parsed (dm-crypt reads them first).
#[derive(Default)]
struct Options<'a> {
    allow_discards: bool,
    same_cpu_crypt: bool,
    high_priority: bool,
    submit_from_crypt_cpus: bool,
    no_read_workqueue: bool,
    no_write_workqueue: bool,
    integrity: Option<Integrity<'a>>,
    integrity_key_size: Option<u32>,
    sector_size: Option<u32>,
    iv_large_sectors: bool,
}

/// A cipher specification split into the crypto API name and the IV mode.
struct CipherSpec<'a> {
    api: [u8; MAX_ALG_NAME],
    api_len: usize,
    tfms_count: u32,
    iv_mode: Option<&'a [u8]>,
    iv_opts: Option<&'a [u8]>,
}

impl<'a> CryptTable<'a> {
    /// Parses a table line's arguments for a target of `len` 512-byte sectors, asking `env` for
    /// the cipher, the key and the device on the way, in dm-crypt's order.
    ///
    /// Arguments after the optional ones are ignored, as by dm-crypt.
    pub fn parse<E: CryptEnv + ?Sized>(args: &Args<'a>, len: u64, env: &mut E) -> ArgResult<Self> {
        let mut args = args.clone();
        if args.remaining() < 5 {
            return Err(NOT_ENOUGH_ARGS);
        }
        let cipher_arg = args.next(NOT_ENOUGH_ARGS.0)?;
        let key_arg = args.next(NOT_ENOUGH_ARGS.0)?;
        let iv_offset_arg = args.next(NOT_ENOUGH_ARGS.0)?;
        let dev = args.next(NOT_ENOUGH_ARGS.0)?;
        let start_arg = args.next(NOT_ENOUGH_ARGS.0)?;

        // get_key_size: only the size's syntax is checked here.
        if let Some(rest) = key_arg.strip_prefix(b":") {
            let (value, tail) = scan_decimal(rest).ok_or(BAD_KEY_SIZE)?;
            if tail.first() != Some(&b':') || (value as u32 as i32) < 0 {
                return Err(BAD_KEY_SIZE);
            }
        }

        let opts = if args.is_empty() {
            Options::default()
        } else {
            let mut group = args.group(MAX_OPT_ARGS, BAD_OPT_COUNT)?;
            Options::parse(&mut group, len)?
        };
        let aead = opts
            .integrity
            .is_some_and(|i| i.profile.eq_ignore_ascii_case("aead"));
        let sector_size = opts.sector_size.unwrap_or(1 << SECTOR_SHIFT);

        let spec = if let Some(rest) = cipher_arg.strip_prefix(b"capi:") {
            CipherSpec::parse_capi(rest, aead)?
        } else {
            CipherSpec::parse_old(cipher_arg, aead)?
        };
        let cipher_string = core::str::from_utf8(cipher_arg).map_err(|_| NO_TFM)?;
        let api = core::str::from_utf8(&spec.api[..spec.api_len]).map_err(|_| NO_TFM)?;
        if api.is_empty() || api.len() >= MAX_ALG_NAME {
            return Err(NO_TFM);
        }
        let cipher = env
            .alloc_cipher(api, spec.tfms_count)
            .map_err(|Refused| NO_TFM)?;

        // crypt_ctr_ivmode.
        let mut iv_mode_name = spec.iv_mode;
        let mut iv_mode_ignored = false;
        if cipher.iv_size == 0 && iv_mode_name.is_some() {
            // dm-crypt warns "Selected cipher does not support IVs" and goes on without one.
            iv_mode_ignored = true;
            iv_mode_name = None;
        }
        let iv_mode = match iv_mode_name {
            None => None,
            Some(name) => Some(IvMode::from_name(name).ok_or_else(|| {
                UNSUPPORTED_IV_MODES
                    .iter()
                    .find(|(n, _)| n.as_bytes() == name)
                    .map_or(BAD_IV_MODE, |(_, msg)| ArgError(msg))
            })?),
        };

        let (key, key_size) = Key::parse(key_arg)?;
        env.set_key(&key, key_size).map_err(|Refused| BAD_KEY)?;
        if let Some(mode) = iv_mode {
            IvGen::new(mode, cipher.iv_size as usize, cipher.block_size as usize)
                .map_err(|_| BAD_IV)?;
        }

        let iv_offset = scan_whole(iv_offset_arg).ok_or(BAD_IV_OFFSET)?;
        if iv_offset & (u64::from(sector_size >> SECTOR_SHIFT) - 1) != 0 {
            return Err(BAD_IV_OFFSET);
        }
        env.get_device(dev).map_err(|Refused| NO_DEVICE)?;
        let start = scan_whole(start_arg).ok_or(BAD_START)?;

        let to_str = |s: &'a [u8]| core::str::from_utf8(s).map_err(|_| NO_TFM);
        Ok(Self {
            cipher_string,
            cipher_api: spec.api,
            cipher_api_len: spec.api_len,
            tfms_count: spec.tfms_count,
            iv_mode,
            iv_opts: spec.iv_opts.map(to_str).transpose()?,
            iv_mode_ignored,
            cipher,
            key,
            key_size,
            iv_offset,
            dev,
            start,
            allow_discards: opts.allow_discards,
            same_cpu_crypt: opts.same_cpu_crypt,
            high_priority: opts.high_priority,
            submit_from_crypt_cpus: opts.submit_from_crypt_cpus,
            no_read_workqueue: opts.no_read_workqueue,
            no_write_workqueue: opts.no_write_workqueue,
            integrity: opts.integrity,
            integrity_key_size: opts.integrity_key_size,
            sector_size,
            iv_large_sectors: opts.iv_large_sectors,
        })
    }

    /// The cipher specification as given (what the table line shows).
    pub fn cipher_string(&self) -> &'a str {
        self.cipher_string
    }

    /// The crypto API algorithm allocated, e.g. `xts(aes)` or `essiv(cbc(aes),sha256)`.
    pub fn cipher_api(&self) -> &str {
        core::str::from_utf8(&self.cipher_api[..self.cipher_api_len]).unwrap_or_default()
    }

    /// Number of transforms, and of equal parts the key is split into (`aes:4-...` gives 4).
    pub fn key_parts(&self) -> u32 {
        self.tfms_count
    }

    /// The IV generator; `None` for ciphers without IV (`ecb`).
    pub fn iv_mode(&self) -> Option<IvMode> {
        self.iv_mode
    }

    /// The IV options (the hash for `essiv`).
    pub fn iv_opts(&self) -> Option<&'a str> {
        self.iv_opts
    }

    /// Whether an IV mode was given for a cipher without IV, and dropped (dm-crypt logs
    /// "Selected cipher does not support IVs").
    pub fn iv_mode_ignored(&self) -> bool {
        self.iv_mode_ignored
    }

    /// What the crypto API said of the cipher.
    pub fn cipher_info(&self) -> CipherInfo {
        self.cipher
    }

    /// The key argument.
    pub fn key(&self) -> Key<'a> {
        self.key
    }

    /// Key size in bytes.
    pub fn key_size(&self) -> u32 {
        self.key_size
    }

    /// The sector number added to target sectors for IVs, in 512-byte sectors.
    pub fn iv_offset(&self) -> u64 {
        self.iv_offset
    }

    /// The device argument, as given.
    pub fn dev(&self) -> &'a [u8] {
        self.dev
    }

    /// First sector of the mapping on the device.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// `allow_discards`: pass discards down.
    pub fn allow_discards(&self) -> bool {
        self.allow_discards
    }

    /// `same_cpu_crypt`: encrypt on the CPU that submitted the I/O.
    pub fn same_cpu_crypt(&self) -> bool {
        self.same_cpu_crypt
    }

    /// `high_priority`: the workqueues run at high priority.
    pub fn high_priority(&self) -> bool {
        self.high_priority
    }

    /// `submit_from_crypt_cpus`: submit writes from the encrypting thread.
    pub fn submit_from_crypt_cpus(&self) -> bool {
        self.submit_from_crypt_cpus
    }

    /// `no_read_workqueue`: decrypt reads synchronously.
    pub fn no_read_workqueue(&self) -> bool {
        self.no_read_workqueue
    }

    /// `no_write_workqueue`: encrypt writes synchronously.
    pub fn no_write_workqueue(&self) -> bool {
        self.no_write_workqueue
    }

    /// `integrity:<tag_size>:<profile>`.
    pub fn integrity(&self) -> Option<Integrity<'a>> {
        self.integrity
    }

    /// `integrity_key_size:<n>`.
    pub fn integrity_key_size(&self) -> Option<u32> {
        self.integrity_key_size
    }

    /// Encryption sector size in bytes.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// `iv_large_sectors`: IVs count encryption sectors, not 512-byte sectors.
    pub fn iv_large_sectors(&self) -> bool {
        self.iv_large_sectors
    }

    /// Writes the table line as dm-crypt reports it (`STATUSTYPE_TABLE`), with the device named
    /// `dev_name` (`major:minor`) and the key as given. dm-crypt always writes the key; it is
    /// `dmsetup` that replaces its digits with zeroes unless `--showkeys` is given.
    pub fn write_table<W: Write>(
        &self,
        w: &mut W,
        dev_name: &str,
        key: ShownKey<'_>,
    ) -> fmt::Result {
        write!(w, "{} ", self.cipher_string)?;
        match key {
            ShownKey::Bytes([]) => w.write_char('-')?,
            ShownKey::Bytes(bytes) => bytes.iter().try_for_each(|b| write!(w, "{b:02x}"))?,
            ShownKey::Keyring {
                size,
                key_type,
                description,
            } => write!(w, ":{size}:{}:{description}", key_type.name())?,
            ShownKey::Random { size } => write!(w, ":{size}:random")?,
        }
        write!(w, " {} {dev_name} {}", self.iv_offset, self.start)?;
        let flags = [
            (self.allow_discards, "allow_discards"),
            (self.same_cpu_crypt, "same_cpu_crypt"),
            (self.high_priority, "high_priority"),
            (self.submit_from_crypt_cpus, "submit_from_crypt_cpus"),
            (self.no_read_workqueue, "no_read_workqueue"),
            (self.no_write_workqueue, "no_write_workqueue"),
        ];
        let count = flags.iter().filter(|(set, _)| *set).count()
            + usize::from(self.integrity.is_some())
            + usize::from(self.sector_size != 1 << SECTOR_SHIFT)
            + usize::from(self.iv_large_sectors)
            + usize::from(self.integrity_key_size.is_some());
        if count == 0 {
            return Ok(());
        }
        write!(w, " {count}")?;
        for (_, name) in flags.iter().filter(|(set, _)| *set) {
            write!(w, " {name}")?;
        }
        if let Some(i) = self.integrity {
            write!(w, " integrity:{}:{}", i.tag_size, i.profile)?;
        }
        if self.sector_size != 1 << SECTOR_SHIFT {
            write!(w, " sector_size:{}", self.sector_size)?;
        }
        if self.iv_large_sectors {
            w.write_str(" iv_large_sectors")?;
        }
        if let Some(n) = self.integrity_key_size {
            write!(w, " integrity_key_size:{n}")?;
        }
        Ok(())
    }

    /// Writes the status line (`STATUSTYPE_INFO`): dm-crypt's is empty.
    pub fn write_info<W: Write>(&self, _w: &mut W) -> fmt::Result {
        Ok(())
    }

    /// Writes the IMA record after the target name and version (`STATUSTYPE_IMA`).
    pub fn write_ima<W: Write>(&self, w: &mut W) -> fmt::Result {
        let yn = |b: bool| if b { 'y' } else { 'n' };
        write!(
            w,
            ",allow_discards={},same_cpu_crypt={},high_priority={},submit_from_crypt_cpus={}\
             ,no_read_workqueue={},no_write_workqueue={},iv_large_sectors={}",
            yn(self.allow_discards),
            yn(self.same_cpu_crypt),
            yn(self.high_priority),
            yn(self.submit_from_crypt_cpus),
            yn(self.no_read_workqueue),
            yn(self.no_write_workqueue),
            yn(self.iv_large_sectors),
        )?;
        if let Some(i) = self.integrity {
            write!(
                w,
                ",integrity_tag_size={},cipher_auth={}",
                i.tag_size, i.profile
            )?;
        }
        if self.sector_size != 1 << SECTOR_SHIFT {
            write!(w, ",sector_size={}", self.sector_size)?;
        }
        write!(
            w,
            ",cipher_string={},key_size={},key_parts={},key_extra_size=0,key_mac_size={};",
            self.cipher_string,
            self.key_size,
            self.tfms_count,
            self.integrity_key_size.unwrap_or(0),
        )
    }
}

impl<'a> Options<'a> {
    /// dm-crypt's `crypt_ctr_optional`, for a target of `len` sectors.
    fn parse(group: &mut Args<'a>, len: u64) -> ArgResult<Self> {
        let mut o = Self::default();
        while let Ok(arg) = group.next(c"") {
            let is = |name: &str| arg.eq_ignore_ascii_case(name.as_bytes());
            if is("allow_discards") {
                o.allow_discards = true;
            } else if is("same_cpu_crypt") {
                o.same_cpu_crypt = true;
            } else if is("high_priority") {
                o.high_priority = true;
            } else if is("submit_from_crypt_cpus") {
                o.submit_from_crypt_cpus = true;
            } else if is("no_read_workqueue") {
                o.no_read_workqueue = true;
            } else if is("no_write_workqueue") {
                o.no_write_workqueue = true;
            } else if let Some((tag_size, rest)) =
                arg.strip_prefix(b"integrity:").and_then(scan_decimal)
            {
                // sscanf("integrity:%u:") counts the number even when no colon follows; the
                // profile starts after the next colon.
                let tag_size = tag_size as u32;
                if tag_size == 0 || tag_size > MAX_TAG_SIZE {
                    return Err(BAD_INTEGRITY);
                }
                let colon = rest.iter().position(|&c| c == b':').ok_or(BAD_INTEGRITY)?;
                let profile = &rest[colon + 1..];
                if !profile.eq_ignore_ascii_case(b"aead") && !profile.eq_ignore_ascii_case(b"none")
                {
                    return Err(BAD_INTEGRITY_PROFILE);
                }
                let profile = core::str::from_utf8(profile).map_err(|_| BAD_INTEGRITY_PROFILE)?;
                o.integrity = Some(Integrity { tag_size, profile });
            } else if let Some(n) = arg
                .strip_prefix(b"integrity_key_size:")
                .and_then(scan_whole)
            {
                if n as u32 == 0 {
                    return Err(BAD_INTEGRITY_KEY_SIZE);
                }
                o.integrity_key_size = Some(n as u32);
            } else if let Some(n) = arg.strip_prefix(b"sector_size:").and_then(scan_whole) {
                // "%hu": the number is kept modulo 2^16.
                let size = u32::from(n as u16);
                if !(1 << SECTOR_SHIFT..=MAX_SECTOR_SIZE).contains(&size) || !size.is_power_of_two()
                {
                    return Err(BAD_SECTOR_SIZE);
                }
                if len & (u64::from(size >> SECTOR_SHIFT) - 1) != 0 {
                    return Err(BAD_DEVICE_SIZE);
                }
                o.sector_size = Some(size);
            } else if is("iv_large_sectors") {
                o.iv_large_sectors = true;
            } else {
                return Err(BAD_OPT);
            }
        }
        Ok(o)
    }
}

impl<'a> CipherSpec<'a> {
    /// `capi:<crypto API name>[-<ivmode>[:<ivopts>]]` (dm-crypt's `crypt_ctr_cipher_new`).
    fn parse_capi(spec: &'a [u8], aead: bool) -> ArgResult<Self> {
        let (spec, iv_opts) = split_last(spec, b':');
        let (api, iv_mode) = split_last(spec, b'-');
        if aead && api.starts_with(b"authenc(") {
            // The MAC is named between "authenc(" and the first comma.
            if !api.contains(&b',') {
                return Err(BAD_AEAD);
            }
        }
        let tfms_count = if iv_mode == Some(b"lmk") { 64 } else { 1 };
        let mut out = Self {
            api: [0; MAX_ALG_NAME],
            api_len: 0,
            tfms_count,
            iv_mode,
            iv_opts,
        };
        if iv_mode == Some(b"essiv") {
            let hash = iv_opts.ok_or(NO_ESSIV_DIGEST)?;
            out.write_name(&[b"essiv(", api, b",", hash, b")"])
                .ok_or(NAME_TOO_LONG_CAPI)?;
        } else if out.write_name(&[api]).is_none() {
            // Too long for the crypto API to know.
            return Err(NO_TFM);
        }
        Ok(out)
    }

    /// `<cipher>[:<keycount>][-<chainmode>[-<ivmode>[:<ivopts>]]]` (dm-crypt's
    /// `crypt_ctr_cipher_old`).
    fn parse_old(spec: &'a [u8], aead: bool) -> ArgResult<Self> {
        if spec.contains(&b'(') || aead {
            return Err(BAD_CIPHER);
        }
        let (first, tmp) = split_first(spec, b'-');
        let (cipher, keycount) = split_first(first, b':');
        let tfms_count = match keycount {
            None => 1,
            Some(k) => match scan_whole(k) {
                Some(n) if (n as u32).is_power_of_two() => n as u32,
                _ => return Err(BAD_KEY_COUNT),
            },
        };
        let (mut chainmode, tmp) = match tmp {
            Some(t) => {
                let (c, rest) = split_first(t, b'-');
                (Some(c), rest)
            }
            None => (None, None),
        };
        let (mut iv_mode, iv_opts) = match tmp {
            Some(t) => {
                let (m, o) = split_first(t, b':');
                (Some(m), o)
            }
            None => (None, None),
        };
        // A bare cipher name, or `<cipher>-plain`, means cbc-plain.
        if chainmode.is_none() || (chainmode == Some(b"plain") && iv_mode.is_none()) {
            chainmode = Some(b"cbc");
            iv_mode = Some(b"plain");
        }
        let chainmode = chainmode.unwrap_or_default();
        if chainmode != b"ecb" && iv_mode.is_none() {
            return Err(NO_IV);
        }
        let mut out = Self {
            api: [0; MAX_ALG_NAME],
            api_len: 0,
            tfms_count,
            iv_mode,
            iv_opts,
        };
        if iv_mode == Some(b"essiv") {
            let hash = iv_opts.ok_or(NO_ESSIV_DIGEST)?;
            out.write_name(&[b"essiv(", chainmode, b"(", cipher, b"),", hash, b")"])
        } else {
            out.write_name(&[chainmode, b"(", cipher, b")"])
        }
        .ok_or(NAME_TOO_LONG_OLD)?;
        Ok(out)
    }

    /// Concatenates `parts` as the crypto API name, if it fits with its NUL.
    fn write_name(&mut self, parts: &[&[u8]]) -> Option<()> {
        let mut len = 0;
        for part in parts {
            let end = len + part.len();
            if end >= MAX_ALG_NAME {
                return None;
            }
            self.api[len..end].copy_from_slice(part);
            len = end;
        }
        self.api_len = len;
        Some(())
    }
}

/// `strsep`: the part before the first `sep`, and what follows it if there is one.
fn split_first(s: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&c| c == sep) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// `strrchr` and cut: the part before the last `sep`, and what follows it if there is one.
fn split_last(s: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match s.iter().rposition(|&c| c == sep) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// The kernel's `isspace` on the bytes a table argument can hold.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// The kernel's `sscanf` reading of an unsigned decimal (`%u`, `%llu`): leading whitespace
/// skipped, at least one digit, no sign, wrapping modulo 2^64 on overflow. Returns the number and
/// what follows it.
pub fn scan_decimal(s: &[u8]) -> Option<(u64, &[u8])> {
    let start = s.iter().position(|&c| !is_space(c)).unwrap_or(s.len());
    let s = &s[start..];
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let value = s[..digits].iter().fold(0u64, |acc, &c| {
        acc.wrapping_mul(10).wrapping_add(u64::from(c - b'0'))
    });
    Some((value, &s[digits..]))
}

/// `sscanf(s, "%llu%c") == 1`: a decimal number and nothing after it.
pub fn scan_whole(s: &[u8]) -> Option<u64> {
    match scan_decimal(s)? {
        (value, []) => Some(value),
        _ => None,
    }
}

/// A message to the target (`dmsetup message <dev> 0 ...`), as dm-crypt's `crypt_message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `key set <key>`: load a new key of the same size (cryptsetup luksResume).
    KeySet(Key<'a>),
    /// `key wipe`: forget the key (cryptsetup luksSuspend).
    KeyWipe,
}

/// Why a message is refused; each is `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// Not a message dm-crypt knows: dm-crypt logs "unrecognised message received.".
    Unrecognised,
    /// A key message while the device is not suspended: dm-crypt logs "not suspended during key
    /// manipulation.".
    NotSuspended,
    /// `key set` with a key dm-crypt cannot parse or of another size, or a random one (nothing
    /// logged).
    BadKey,
    /// `key set` on a device whose key is random: its key is never set from outside the kernel.
    RandomKey,
}

impl<'a> Message<'a> {
    /// Parses a message for a target whose key is `key_size` bytes, `suspended` or not, and
    /// `random` (`:<size>:random`) or not. The kernel side still has to load a `key set` key,
    /// and refuse it (`EINVAL`) if that fails.
    ///
    /// `key set` is refused on a device with a random key (its key never comes from userspace,
    /// and another key would make its data unreadable), and a random key is refused by `key
    /// set` (it would replace a key with one that reads nothing back). `key wipe` works on both.
    pub fn parse(
        argv: &[&'a [u8]],
        suspended: bool,
        key_size: u32,
        random: bool,
    ) -> Result<Self, MessageError> {
        let is = |arg: &[u8], word: &str| arg.eq_ignore_ascii_case(word.as_bytes());
        match argv {
            [key, ..] if argv.len() >= 2 && is(key, "key") => {
                if !suspended {
                    return Err(MessageError::NotSuspended);
                }
                match argv {
                    [_, set, _] if is(set, "set") && random => Err(MessageError::RandomKey),
                    [_, set, new] if is(set, "set") => match Key::parse(new) {
                        Ok((Key::Random, _)) => Err(MessageError::BadKey),
                        Ok((key, size)) if size == key_size => Ok(Message::KeySet(key)),
                        _ => Err(MessageError::BadKey),
                    },
                    [_, wipe] if is(wipe, "wipe") => Ok(Message::KeyWipe),
                    _ => Err(MessageError::Unrecognised),
                }
            }
            _ => Err(MessageError::Unrecognised),
        }
    }
}
