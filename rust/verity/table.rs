// SPDX-License-Identifier: GPL-2.0

//! The dm-verity table line: parsing, and the table and status lines written back.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`.
//!
//! ```text
//! <version> <data_dev> <hash_dev> <data_block_size> <hash_block_size>
//! <num_data_blocks> <hash_start_block> <algorithm> <root_digest> <salt>
//! [<#opt_params> <opt_params>...]
//! ```
//!
//! Parsing follows dm-verity's constructor and reports its messages, except that it cannot look
//! up the algorithm: the caller does, then calls [`VerityTable::check_digest_size`]. Forward error
//! correction is not supported, so its options are refused.

use core::ffi::CStr;
use core::fmt::{self, Write};

use crate::dm_args::{parse_hex_exact, ArgError, ArgResult, Args};

/// Largest root digest accepted: the kernel's `HASH_MAX_DIGESTSIZE`.
pub const MAX_DIGEST_SIZE: usize = 64;

/// Largest salt accepted: what a veritysetup superblock can hold.
pub const MAX_SALT_SIZE: usize = 256;

/// Arguments before the optional ones.
const PRIMARY_ARGS: usize = 10;

/// Most optional arguments: dm-verity's `DM_VERITY_OPTS_MAX` with FEC (8) and root hash signature
/// (2) support, so that FEC tables get a clear refusal rather than a count error.
const MAX_OPT_ARGS: u32 = 5 + 8 + 2;

/// `check_at_most_once` keeps a bitmap that dm-verity indexes with an `int`.
const MAX_AT_MOST_ONCE_BLOCKS: u64 = i32::MAX as u64;

const SECTOR_SHIFT: u32 = 9;
const SECTOR_SIZE: u32 = 1 << SECTOR_SHIFT;

const IGNORE_ZERO_BLOCKS: &str = "ignore_zero_blocks";
const CHECK_AT_MOST_ONCE: &str = "check_at_most_once";
const TRY_VERIFY_IN_TASKLET: &str = "try_verify_in_tasklet";
const ROOT_HASH_SIG_KEY_DESC: &str = "root_hash_sig_key_desc";
const FEC_OPTIONS: [&str; 4] = [
    "use_fec_from_device",
    "fec_roots",
    "fec_blocks",
    "fec_start",
];

// Root hash signature errors, spelled as dm-verity does.
const SIG_KEY_REPEATED: ArgError =
    ArgError(c"DM Verity Sig Verification root_hash_sig_key_desc already specified");
const SIG_KEY_MISSING: &CStr = c"DM Verity Sig Verification Signature key not specified";
const SIG_KEY_INVALID: ArgError = ArgError(c"DM Verity Sig Verification Invalid key specified");

/// What to do when a block does not match its digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CorruptionMode {
    /// Fail the read with `EIO` (the default).
    #[default]
    Eio,
    /// Log the corruption and return the data anyway (`ignore_corruption`).
    Logging,
    /// Restart the system (`restart_on_corruption`).
    Restart,
    /// Panic (`panic_on_corruption`).
    Panic,
}

impl CorruptionMode {
    const OPTIONS: [(Self, &'static str); 3] = [
        (Self::Logging, "ignore_corruption"),
        (Self::Restart, "restart_on_corruption"),
        (Self::Panic, "panic_on_corruption"),
    ];

    /// The optional argument selecting this mode; `None` for the default.
    pub fn option(self) -> Option<&'static str> {
        option_of(&Self::OPTIONS, self)
    }
}

/// What to do when reading a data or hash block fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoErrorMode {
    /// Fail the read with the error (the default).
    #[default]
    Eio,
    /// Restart the system (`restart_on_error`).
    Restart,
    /// Panic (`panic_on_error`).
    Panic,
}

impl IoErrorMode {
    const OPTIONS: [(Self, &'static str); 2] = [
        (Self::Restart, "restart_on_error"),
        (Self::Panic, "panic_on_error"),
    ];

    /// The optional argument selecting this mode; `None` for the default.
    pub fn option(self) -> Option<&'static str> {
        option_of(&Self::OPTIONS, self)
    }
}

/// The optional argument naming `mode`, if any.
fn option_of<M: Copy + PartialEq>(options: &[(M, &'static str)], mode: M) -> Option<&'static str> {
    options
        .iter()
        .find(|(m, _)| *m == mode)
        .map(|(_, name)| *name)
}

/// Finds the mode an optional argument names, case-insensitively like dm-verity.
fn find_mode<M: Copy>(options: &[(M, &str)], arg: &[u8]) -> Option<M> {
    options
        .iter()
        .find(|(_, name)| arg.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(mode, _)| *mode)
}

/// Up to `N` bytes given in hex on the table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HexBytes<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> HexBytes<N> {
    /// Decodes an even-length hex string of at most `2 * N` digits.
    fn parse(hex: &[u8]) -> Option<Self> {
        let mut bytes = [0; N];
        let len = hex.len() / 2;
        parse_hex_exact(hex, bytes.get_mut(..len)?)?;
        Some(Self { bytes, len })
    }

    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Display for HexBytes<N> {
    /// Lowercase hex, or `-` when empty (how dm-verity prints a missing salt).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("-");
        }
        self.as_slice()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A parsed dm-verity table line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityTable<'a> {
    version: u32,
    data_dev: &'a [u8],
    hash_dev: &'a [u8],
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    hash_start: u64,
    algorithm: &'a str,
    root_digest: HexBytes<MAX_DIGEST_SIZE>,
    salt: HexBytes<MAX_SALT_SIZE>,
    corruption_mode: CorruptionMode,
    io_error_mode: IoErrorMode,
    ignore_zero_blocks: bool,
    check_at_most_once: bool,
    try_verify_in_tasklet: bool,
    root_hash_sig_key_desc: Option<&'a str>,
}

impl<'a> VerityTable<'a> {
    /// Parses a table line's arguments. Block sizes must be powers of two from 512 to
    /// `max_block_size` (the page size).
    ///
    /// Like dm-verity, checks the optional-argument count before anything else. Arguments after
    /// the optional ones are left in `args`: dm-verity ignores them.
    ///
    /// Stricter than dm-verity in two ways: the hash block size is limited to `max_block_size`
    /// too (dm-verity allows up to `INT_MAX`), and the salt to [`MAX_SALT_SIZE`] bytes
    /// (dm-verity has no limit; veritysetup has this one).
    pub fn parse(args: &mut Args<'a>, max_block_size: u32) -> ArgResult<Self> {
        const NOT_ENOUGH: ArgError = ArgError(c"Not enough arguments");
        if args.remaining() < PRIMARY_ARGS {
            return Err(NOT_ENOUGH);
        }
        let mut rest = args.clone();
        for _ in 0..PRIMARY_ARGS {
            rest.next(NOT_ENOUGH.0)?;
        }
        let mut opts = if rest.is_empty() {
            Args::new(&[])
        } else {
            rest.group(MAX_OPT_ARGS, c"Invalid number of feature args")?
        };

        let version = args.next_u32_in(0, 1, c"Invalid version")?;
        let data_dev = args.next(NOT_ENOUGH.0)?;
        let hash_dev = args.next(NOT_ENOUGH.0)?;
        let data_block_size =
            next_block_size(args, max_block_size, c"Invalid data device block size")?;
        let hash_block_size =
            next_block_size(args, max_block_size, c"Invalid hash device block size")?;
        let data_blocks = next_blocks(args, data_block_size, c"Invalid data blocks")?;
        let hash_start = next_blocks(args, hash_block_size, c"Invalid hash start")?;
        let algorithm = args.next_str(c"Cannot initialize hash function")?;
        let root_digest = HexBytes::parse(args.next(NOT_ENOUGH.0)?)
            .filter(|d| d.len > 0)
            .ok_or(ArgError(c"Invalid root digest"))?;
        let salt = match args.next(NOT_ENOUGH.0)? {
            b"-" => HexBytes::parse(b""),
            hex => HexBytes::parse(hex),
        }
        .ok_or(ArgError(c"Invalid salt"))?;

        let mut table = Self {
            version,
            data_dev,
            hash_dev,
            data_block_size,
            hash_block_size,
            data_blocks,
            hash_start,
            algorithm,
            root_digest,
            salt,
            corruption_mode: CorruptionMode::Eio,
            io_error_mode: IoErrorMode::Eio,
            ignore_zero_blocks: false,
            check_at_most_once: false,
            try_verify_in_tasklet: false,
            root_hash_sig_key_desc: None,
        };
        table.parse_options(&mut opts)?;
        *args = rest;
        Ok(table)
    }

    fn parse_options(&mut self, opts: &mut Args<'a>) -> ArgResult<()> {
        const CONFLICT: ArgError = ArgError(c"Conflicting error handling parameters");
        while let Ok(arg) = opts.next(c"") {
            let is = |name: &str| arg.eq_ignore_ascii_case(name.as_bytes());
            if let Some(mode) = find_mode(&CorruptionMode::OPTIONS, arg) {
                if self.corruption_mode != CorruptionMode::Eio {
                    return Err(CONFLICT);
                }
                self.corruption_mode = mode;
            } else if let Some(mode) = find_mode(&IoErrorMode::OPTIONS, arg) {
                if self.io_error_mode != IoErrorMode::Eio {
                    return Err(CONFLICT);
                }
                self.io_error_mode = mode;
            } else if is(IGNORE_ZERO_BLOCKS) {
                self.ignore_zero_blocks = true;
            } else if is(CHECK_AT_MOST_ONCE) {
                if self.data_blocks > MAX_AT_MOST_ONCE_BLOCKS {
                    return Err(ArgError(c"device too large to use check_at_most_once"));
                }
                self.check_at_most_once = true;
            } else if is(TRY_VERIFY_IN_TASKLET) {
                self.try_verify_in_tasklet = true;
            } else if is(ROOT_HASH_SIG_KEY_DESC) {
                if self.root_hash_sig_key_desc.is_some() {
                    return Err(SIG_KEY_REPEATED);
                }
                let key = opts.next(SIG_KEY_MISSING)?;
                let key = core::str::from_utf8(key).map_err(|_| SIG_KEY_INVALID)?;
                self.root_hash_sig_key_desc = Some(key);
            } else if FEC_OPTIONS.iter().any(|name| is(name)) {
                return Err(ArgError(c"FEC is not supported"));
            } else {
                return Err(ArgError(c"Unrecognized verity feature request"));
            }
        }
        Ok(())
    }

    /// Checks the root digest against the size of the algorithm's digests, once the caller has
    /// looked the algorithm up.
    pub fn check_digest_size(&self, digest_size: usize) -> ArgResult<()> {
        let hash_block_size = self.hash_block_size as usize;
        if digest_size == 0 || digest_size > hash_block_size / 2 {
            return Err(ArgError(c"Digest size too big"));
        }
        if self.root_digest.len != digest_size {
            return Err(ArgError(c"Invalid root digest"));
        }
        Ok(())
    }

    /// Format version: 0 (original Chromium OS) or 1.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data device argument, as given.
    pub fn data_dev(&self) -> &'a [u8] {
        self.data_dev
    }

    /// The hash device argument, as given.
    pub fn hash_dev(&self) -> &'a [u8] {
        self.hash_dev
    }

    /// Data block size in bytes.
    pub fn data_block_size(&self) -> u32 {
        self.data_block_size
    }

    /// Hash block size in bytes.
    pub fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }

    /// Number of data blocks covered by the tree.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// Size of the data area in 512-byte sectors: the most the target may map. Cannot overflow:
    /// the parser refuses block counts whose size does not fit.
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks << sector_shift(self.data_block_size)
    }

    /// Hash block holding the top level of the tree (in hash blocks).
    pub fn hash_start(&self) -> u64 {
        self.hash_start
    }

    /// Hash algorithm name, for the crypto API.
    pub fn algorithm(&self) -> &'a str {
        self.algorithm
    }

    /// The root digest.
    pub fn root_digest(&self) -> &[u8] {
        self.root_digest.as_slice()
    }

    /// The salt; empty when the table gives `-`.
    pub fn salt(&self) -> &[u8] {
        self.salt.as_slice()
    }

    /// What to do on a digest mismatch.
    pub fn corruption_mode(&self) -> CorruptionMode {
        self.corruption_mode
    }

    /// What to do on an I/O error.
    pub fn io_error_mode(&self) -> IoErrorMode {
        self.io_error_mode
    }

    /// `ignore_zero_blocks`: blocks whose expected digest is that of a zero block read as zeroes
    /// without being read or checked.
    pub fn ignore_zero_blocks(&self) -> bool {
        self.ignore_zero_blocks
    }

    /// `check_at_most_once`: each data block is checked only the first time it is read.
    pub fn check_at_most_once(&self) -> bool {
        self.check_at_most_once
    }

    /// `try_verify_in_tasklet`: a performance hint, kept only to be reported back.
    pub fn try_verify_in_tasklet(&self) -> bool {
        self.try_verify_in_tasklet
    }

    /// `root_hash_sig_key_desc`: the keyring description of the root digest's signature.
    pub fn root_hash_sig_key_desc(&self) -> Option<&'a str> {
        self.root_hash_sig_key_desc
    }

    /// Writes the table line as dm-verity reports it (`STATUSTYPE_TABLE`), with the devices
    /// named `data_dev_name` and `hash_dev_name` (`major:minor`).
    pub fn write_table<W: Write>(
        &self,
        w: &mut W,
        data_dev_name: &str,
        hash_dev_name: &str,
    ) -> fmt::Result {
        write!(
            w,
            "{} {data_dev_name} {hash_dev_name} {} {} {} {} {} {} {}",
            self.version,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start,
            self.algorithm,
            self.root_digest,
            self.salt,
        )?;
        let corruption = self.corruption_mode.option();
        let io_error = self.io_error_mode.option();
        let flags = [
            (self.ignore_zero_blocks, IGNORE_ZERO_BLOCKS),
            (self.check_at_most_once, CHECK_AT_MOST_ONCE),
            (self.try_verify_in_tasklet, TRY_VERIFY_IN_TASKLET),
        ];
        let count = usize::from(corruption.is_some())
            + usize::from(io_error.is_some())
            + flags.iter().filter(|(set, _)| *set).count()
            + 2 * usize::from(self.root_hash_sig_key_desc.is_some());
        if count == 0 {
            return Ok(());
        }
        write!(w, " {count}")?;
        for name in corruption.into_iter().chain(io_error) {
            write!(w, " {name}")?;
        }
        for (_, name) in flags.iter().filter(|(set, _)| *set) {
            write!(w, " {name}")?;
        }
        if let Some(key) = self.root_hash_sig_key_desc {
            write!(w, " {ROOT_HASH_SIG_KEY_DESC} {key}")?;
        }
        Ok(())
    }

    /// Writes the status line (`STATUSTYPE_INFO`): `V` or, once a mismatch was seen, `C`,
    /// then `-` for the count of FEC corrections (FEC is not supported).
    pub fn write_info<W: Write>(&self, w: &mut W, hash_failed: bool) -> fmt::Result {
        write!(w, "{} -", status_char(hash_failed))
    }

    /// Writes the IMA measurement record (`STATUSTYPE_IMA`) after the
    /// `target_name=...,target_version=...` prefix, which the caller writes. Ends with `;`.
    pub fn write_ima<W: Write>(
        &self,
        w: &mut W,
        data_dev_name: &str,
        hash_dev_name: &str,
        hash_failed: bool,
    ) -> fmt::Result {
        let yes_no = |b: bool| if b { 'y' } else { 'n' };
        write!(
            w,
            ",hash_failed={},verity_version={},data_device_name={data_dev_name}\
             ,hash_device_name={hash_dev_name},verity_algorithm={},root_digest={},salt={}\
             ,ignore_zero_blocks={},check_at_most_once={}",
            status_char(hash_failed),
            self.version,
            self.algorithm,
            self.root_digest,
            self.salt,
            yes_no(self.ignore_zero_blocks),
            yes_no(self.check_at_most_once),
        )?;
        if let Some(key) = self.root_hash_sig_key_desc {
            write!(w, ",{ROOT_HASH_SIG_KEY_DESC}={key}")?;
        }
        if let Some(mode) = self.corruption_mode.option() {
            write!(w, ",verity_mode={mode}")?;
        }
        if let Some(mode) = self.io_error_mode.option() {
            write!(w, ",verity_error_mode={mode}")?;
        }
        w.write_char(';')
    }
}

/// `V` for valid, `C` once corruption was seen.
fn status_char(hash_failed: bool) -> char {
    if hash_failed {
        'C'
    } else {
        'V'
    }
}

/// Takes a block size: a power of two from one sector to `max`.
fn next_block_size(args: &mut Args<'_>, max: u32, err: &'static CStr) -> ArgResult<u32> {
    let size = args.next_u32_in(SECTOR_SIZE, max, err)?;
    if !size.is_power_of_two() {
        return Err(ArgError(err));
    }
    Ok(size)
}

/// log2 of the sectors in a block of `block_size` bytes (at least one sector).
fn sector_shift(block_size: u32) -> u32 {
    block_size.trailing_zeros().saturating_sub(SECTOR_SHIFT)
}

/// Takes a count of `block_size` blocks, refusing counts whose size in sectors overflows a `u64`
/// (dm-verity's `sector_t` check).
fn next_blocks(args: &mut Args<'_>, block_size: u32, err: &'static CStr) -> ArgResult<u64> {
    let blocks = args.next_u64(err)?;
    if blocks.leading_zeros() < sector_shift(block_size) {
        return Err(ArgError(err));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    const ROOT: &str = "4505cf0b676d190b896e0130ee73b1b75b87599e083edd12cccb4ddc7ec486ff";
    const BASE: &str = "1 /dev/sda1 /dev/sda2 4096 4096 262144 1 sha256";

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    /// Parses `line` with 4096-byte pages. The line is leaked so the table can borrow it.
    fn parse(line: &str) -> ArgResult<VerityTable<'static>> {
        let line: &'static str = String::from(line).leak();
        let argv: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        VerityTable::parse(&mut Args::new(argv.leak()), 4096)
    }

    fn error(line: &str) -> &'static CStr {
        parse(line).expect_err(line).0
    }

    fn table_line(t: &VerityTable<'_>, data_dev: &str, hash_dev: &str) -> String {
        let mut out = String::new();
        t.write_table(&mut out, data_dev, hash_dev).unwrap();
        out
    }

    /// Parses `line`, then writes it back naming the devices as given: the words must match.
    fn round_trip(line: &str) {
        let t = parse(line).expect(line);
        let dev = |arg| std::str::from_utf8(arg).unwrap();
        let out = table_line(&t, dev(t.data_dev()), dev(t.hash_dev()));
        assert_eq!(words(&out), words(line));
    }

    #[test]
    fn fields() {
        let t = parse(&std::format!(
            "0 8:1 8:2 512 1024 100 7 sha1 {} 00ff 5 Panic_On_Corruption restart_on_error \
             ignore_zero_blocks check_at_most_once try_verify_in_tasklet",
            &ROOT[..40]
        ))
        .unwrap();
        assert_eq!(t.version(), 0);
        assert_eq!((t.data_dev(), t.hash_dev()), (&b"8:1"[..], &b"8:2"[..]));
        assert_eq!((t.data_block_size(), t.hash_block_size()), (512, 1024));
        assert_eq!(
            (t.data_blocks(), t.data_sectors(), t.hash_start()),
            (100, 100, 7)
        );
        assert_eq!(t.algorithm(), "sha1");
        assert_eq!(t.root_digest().len(), 20);
        assert_eq!(t.root_digest()[..2], [0x45, 0x05]);
        assert_eq!(t.salt(), [0, 0xff]);
        assert_eq!(t.corruption_mode(), CorruptionMode::Panic);
        assert_eq!(t.io_error_mode(), IoErrorMode::Restart);
        assert!(t.ignore_zero_blocks() && t.check_at_most_once() && t.try_verify_in_tasklet());
        assert_eq!(t.root_hash_sig_key_desc(), None);

        let t = parse(&std::format!("{BASE} {ROOT} -")).unwrap();
        assert_eq!(t.data_sectors(), 262144 * 8);
        assert!(t.salt().is_empty());
        assert_eq!(t.corruption_mode(), CorruptionMode::Eio);
        assert_eq!(t.io_error_mode(), IoErrorMode::Eio);
        assert!(!t.ignore_zero_blocks() && !t.check_at_most_once() && !t.try_verify_in_tasklet());

        let t = parse(&std::format!(
            "{BASE} {ROOT} - 2 root_hash_sig_key_desc my:key"
        ))
        .unwrap();
        assert_eq!(t.root_hash_sig_key_desc(), Some("my:key"));
    }

    #[test]
    fn round_trips() {
        round_trip(&std::format!("{BASE} {ROOT} -"));
        round_trip(&std::format!("{BASE} {ROOT} 0123456789abcdef"));
        round_trip(&std::format!("{BASE} {ROOT} - 1 ignore_corruption"));
        round_trip(&std::format!(
            "{BASE} {ROOT} 00 6 restart_on_corruption panic_on_error ignore_zero_blocks \
             check_at_most_once root_hash_sig_key_desc mykey"
        ));
        round_trip(&std::format!(
            "0 253:0 253:1 512 4096 18446744073709551615 2251799813685247 sha512 {ROOT}{ROOT} {} \
             2 restart_on_error try_verify_in_tasklet",
            "ab".repeat(MAX_SALT_SIZE)
        ));
    }

    #[test]
    fn canonical_output() {
        // Options come back lowercase and in dm-verity's order, hex lowercase; no count for none.
        let t = parse(&std::format!(
            "{BASE} {} ABCD 5 ROOT_HASH_SIG_KEY_DESC k Check_At_Most_Once panic_on_error \
             ignore_corruption",
            ROOT.to_uppercase()
        ))
        .unwrap();
        assert_eq!(
            table_line(&t, "8:1", "8:2"),
            std::format!(
                "1 8:1 8:2 4096 4096 262144 1 sha256 {ROOT} abcd 5 ignore_corruption \
                 panic_on_error check_at_most_once root_hash_sig_key_desc k"
            )
        );
        let t = parse(&std::format!("{BASE} {ROOT} - 0")).unwrap();
        assert_eq!(
            table_line(&t, "8:1", "8:2"),
            std::format!("1 8:1 8:2 4096 4096 262144 1 sha256 {ROOT} -")
        );
    }

    #[test]
    fn status_lines() {
        let t = parse(&std::format!(
            "{BASE} {ROOT} 0a 2 ignore_zero_blocks restart_on_error"
        ));
        let t = t.unwrap();
        let mut out = String::new();
        t.write_info(&mut out, false).unwrap();
        assert_eq!(out, "V -");
        out.clear();
        t.write_info(&mut out, true).unwrap();
        assert_eq!(out, "C -");
        out.clear();
        t.write_ima(&mut out, "8:1", "8:2", true).unwrap();
        assert_eq!(
            out,
            std::format!(
                ",hash_failed=C,verity_version=1,data_device_name=8:1,hash_device_name=8:2\
                 ,verity_algorithm=sha256,root_digest={ROOT},salt=0a,ignore_zero_blocks=y\
                 ,check_at_most_once=n,verity_error_mode=restart_on_error;"
            )
        );

        let t = parse(&std::format!(
            "{BASE} {ROOT} - 3 root_hash_sig_key_desc k panic_on_corruption"
        ));
        out.clear();
        t.unwrap().write_ima(&mut out, "a", "b", false).unwrap();
        assert!(
            out.ends_with(
                ",salt=-,ignore_zero_blocks=n,check_at_most_once=n\
                 ,root_hash_sig_key_desc=k,verity_mode=panic_on_corruption;"
            ),
            "{out}"
        );
    }

    #[test]
    fn optional_argument_quirks() {
        // Arguments after the optional group are left over (dm-verity ignores them).
        let argv = words("1 a b 512 512 1 0 sha1 00 - 1 ignore_zero_blocks trailing words");
        let argv: Vec<&[u8]> = argv.into_iter().map(str::as_bytes).collect();
        let mut args = Args::new(&argv);
        assert!(VerityTable::parse(&mut args, 4096)
            .unwrap()
            .ignore_zero_blocks());
        assert_eq!(args.remaining(), 2);
        let mut args = Args::new(&argv[..10]);
        assert!(VerityTable::parse(&mut args, 4096).is_ok());
        assert!(args.is_empty());
        // Repeating a flag is harmless (repeating a mode is not: see `errors`).
        assert!(parse(&std::format!(
            "{BASE} {ROOT} - 2 check_at_most_once check_at_most_once"
        ))
        .is_ok());
        // The count is checked before the primary arguments.
        assert_eq!(
            error("2 a b 1 1 1 1 x y z 16"),
            c"Invalid number of feature args"
        );
        // The largest count dm-verity accepts.
        let opts = "try_verify_in_tasklet ".repeat(15);
        assert!(parse(&std::format!("{BASE} {ROOT} - 15 {opts}")).is_ok());
        // check_at_most_once needs the block count to fit in an int.
        let line = std::format!("1 a b 512 512 2147483647 0 sha256 {ROOT} - 1 check_at_most_once");
        assert!(parse(&line).is_ok());
    }

    #[test]
    fn errors() {
        let cases: &[(&CStr, &[&str])] = &[
            (c"Not enough arguments", &["1 a b 4096 4096 1 0 sha256 00"]),
            (
                c"Invalid version",
                &[
                    "2 a b 4096 4096 1 0 sha256 00 -",
                    "x a b 4096 4096 1 0 sha256 00 -",
                    "-1 a b 4096 4096 1 0 sha256 00 -",
                ],
            ),
            (
                c"Invalid data device block size",
                &[
                    "1 a b 0 4096 1 0 sha256 00 -",
                    "1 a b 256 4096 1 0 sha256 00 -",
                    "1 a b 3072 4096 1 0 sha256 00 -",
                    "1 a b 8192 4096 1 0 sha256 00 -",
                    "1 a b 4k 4096 1 0 sha256 00 -",
                ],
            ),
            (
                c"Invalid hash device block size",
                &[
                    "1 a b 4096 1000 1 0 sha256 00 -",
                    "1 a b 4096 8192 1 0 sha256 00 -",
                ],
            ),
            (
                c"Invalid data blocks",
                &[
                    "1 a b 4096 4096 x 0 sha256 00 -",
                    // 2^61 blocks of 8 sectors overflow a sector count.
                    "1 a b 4096 4096 2305843009213693952 0 sha256 00 -",
                    "1 a b 512 512 18446744073709551616 0 sha256 00 -",
                ],
            ),
            (
                c"Invalid hash start",
                &[
                    "1 a b 4096 4096 1 2305843009213693952 sha256 00 -",
                    "1 a b 4096 4096 1 -1 sha256 00 -",
                ],
            ),
            (
                c"Invalid root digest",
                &[
                    "1 a b 4096 4096 1 0 sha256 0 -",
                    "1 a b 4096 4096 1 0 sha256 0g -",
                    "1 a b 4096 4096 1 0 sha256 - -",
                ],
            ),
            (
                c"Invalid salt",
                &[
                    "1 a b 4096 4096 1 0 sha256 00 0",
                    "1 a b 4096 4096 1 0 sha256 00 zz",
                ],
            ),
            (
                c"device too large to use check_at_most_once",
                &["1 a b 512 512 2147483648 0 sha256 00 - 1 check_at_most_once"],
            ),
        ];
        // Optional arguments after "1 a b 4096 4096 1 0 sha256 00 -".
        let option_cases: &[(&CStr, &[&str])] = &[
            (
                c"Invalid number of feature args",
                &["x", "16", "2 ignore_zero_blocks"],
            ),
            (c"Unrecognized verity feature request", &["1 bogus", "1 0"]),
            (
                c"Conflicting error handling parameters",
                &[
                    "2 ignore_corruption restart_on_corruption",
                    "2 panic_on_corruption panic_on_corruption",
                    "2 restart_on_error panic_on_error",
                ],
            ),
            (
                c"FEC is not supported",
                &[
                    "2 use_fec_from_device c",
                    "2 fec_roots 2",
                    "2 FEC_BLOCKS 2",
                    "2 fec_start 0",
                ],
            ),
            (SIG_KEY_MISSING, &["1 root_hash_sig_key_desc"]),
            (
                SIG_KEY_REPEATED.0,
                &["4 root_hash_sig_key_desc a root_hash_sig_key_desc b"],
            ),
        ];
        for (want, lines) in cases {
            for line in *lines {
                assert_eq!(error(line), *want, "{line}");
            }
        }
        for (want, options) in option_cases {
            for options in *options {
                let line = std::format!("1 a b 4096 4096 1 0 sha256 00 - {options}");
                assert_eq!(error(&line), *want, "{line}");
            }
        }
    }

    #[test]
    fn hex_lengths() {
        let digest = |n: usize| std::format!("1 a b 4096 4096 1 0 sha256 {} -", "0f".repeat(n));
        assert_eq!(error(&digest(MAX_DIGEST_SIZE + 1)), c"Invalid root digest");
        assert_eq!(
            parse(&digest(MAX_DIGEST_SIZE)).unwrap().root_digest().len(),
            MAX_DIGEST_SIZE
        );
        let salt = |n: usize| std::format!("1 a b 4096 4096 1 0 sha256 00 {}", "ab".repeat(n));
        assert_eq!(error(&salt(MAX_SALT_SIZE + 1)), c"Invalid salt");
        assert_eq!(
            parse(&salt(MAX_SALT_SIZE)).unwrap().salt().len(),
            MAX_SALT_SIZE
        );
    }

    #[test]
    fn bad_utf8() {
        let base: [&[u8]; 10] = [
            b"1", b"a", b"b", b"512", b"512", b"1", b"0", b"sha1", b"00", b"-",
        ];
        let mut argv = base;
        argv[7] = b"sh\xff";
        let r = VerityTable::parse(&mut Args::new(&argv), 4096);
        assert_eq!(r, Err(ArgError(c"Cannot initialize hash function")));
        let argv: Vec<&[u8]> = base
            .iter()
            .copied()
            .chain([&b"2"[..], b"root_hash_sig_key_desc", b"\xff"])
            .collect();
        let r = VerityTable::parse(&mut Args::new(&argv), 4096);
        assert_eq!(r, Err(SIG_KEY_INVALID));
    }

    #[test]
    fn digest_size_checks() {
        let t = parse("1 a b 512 512 1 0 x 00112233 -").unwrap();
        assert!(t.check_digest_size(4).is_ok());
        assert_eq!(
            t.check_digest_size(3),
            Err(ArgError(c"Invalid root digest"))
        );
        assert_eq!(
            t.check_digest_size(5),
            Err(ArgError(c"Invalid root digest"))
        );
        assert_eq!(
            t.check_digest_size(0),
            Err(ArgError(c"Digest size too big"))
        );
        assert_eq!(
            t.check_digest_size(257),
            Err(ArgError(c"Digest size too big"))
        );
    }
}
