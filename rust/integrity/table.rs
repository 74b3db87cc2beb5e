// SPDX-License-Identifier: GPL-2.0

//! The dm-integrity table line: parsing, the checks dm-integrity makes once it knows the
//! hash's digest size and the superblock, and the status, table and IMA lines written back.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`.
//!
//! ```text
//! <dev> <reserved_sectors> <tag_size|-> <mode> <#opt_params> <opt_params>...
//! ```
//!
//! Parsing follows dm-integrity 1.15's constructor (Linux 7.3) and reports its messages, with
//! these differences: numbers are decimal digits only and must fit their field (the kernel's
//! `sscanf` truncates a too-large `%u`); mode `I` (inline, tags in the device's own integrity
//! metadata) is refused as not supported. Looking up the algorithms and opening the devices are
//! the caller's, between [`IntegrityTable::parse`] and [`IntegrityTable::check`].

use core::ffi::CStr;
use core::fmt::{self, Write};

use crate::dm_args::{parse_hex_exact, parse_u64, ArgError, ArgResult, Args};
use crate::integrity_superblock::{
    Superblock, SB_FLAG_FIXED_HMAC, SB_FLAG_FIXED_PADDING, SB_FLAG_RECALCULATING,
};

/// Arguments before the optional ones.
const DIRECT_ARGUMENTS: usize = 4;
/// Most optional arguments.
const MAX_OPT_ARGS: u32 = 18;

const DEFAULT_INTERLEAVE_SECTORS: u32 = 32768;
const DEFAULT_BUFFER_SECTORS: u32 = 128;
const DEFAULT_JOURNAL_WATERMARK: u32 = 50;
const DEFAULT_SYNC_MSEC: u32 = 10000;
const DEFAULT_BITMAP_FLUSH_MSEC: u32 = 10000;
const MAX_SECTORS_PER_BLOCK: u32 = 8;
const SECTOR_SHIFT: u32 = 9;
/// Largest tag (`MAX_TAG_SIZE`).
pub const MAX_TAG_SIZE: u32 = 255;

/// The refusal of a recalculation that an attacker could abuse to get data with chosen
/// content signed (the kernel's error; its errno is `EOPNOTSUPP`, not `EINVAL`).
pub const HMAC_RECALCULATE_REFUSED: ArgError = ArgError(
    c"Recalculating with HMAC is disabled for security reasons - if you really need it, use the argument \"legacy_recalculate\"",
);

/// How writes reach the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `J`: data and tags go through the journal first.
    Journal,
    /// `D`: written in place, no journal (a crash may leave data and tag mismatching).
    Direct,
    /// `B`: written in place, dirty regions noted in a bitmap and recalculated after a crash.
    Bitmap,
    /// `R`: recovery, read-only, tags not checked, the journal not replayed.
    Recovery,
}

impl Mode {
    /// The mode's letter on the table line.
    pub fn letter(self) -> char {
        match self {
            Self::Journal => 'J',
            Self::Direct => 'D',
            Self::Bitmap => 'B',
            Self::Recovery => 'R',
        }
    }
}

/// An algorithm argument: `<alg>[:<hex key>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlgSpec<'a> {
    alg: &'a str,
    key_hex: Option<&'a [u8]>,
}

impl<'a> AlgSpec<'a> {
    /// Parses what follows `internal_hash:`, `journal_crypt:` or `journal_mac:`. The key must
    /// be an even number of hex digits.
    fn parse(arg: &'a [u8], err: &'static CStr) -> ArgResult<Self> {
        let (alg, key_hex) = match arg.iter().position(|&c| c == b':') {
            Some(i) => (&arg[..i], Some(&arg[i + 1..])),
            None => (arg, None),
        };
        let alg = core::str::from_utf8(alg).map_err(|_| ArgError(err))?;
        if let Some(key) = key_hex {
            if key.len() % 2 != 0 || !key.iter().all(u8::is_ascii_hexdigit) {
                return Err(ArgError(err));
            }
        }
        Ok(Self { alg, key_hex })
    }

    /// The crypto API name, e.g. `crc32c` or `hmac(sha256)`.
    pub fn alg(&self) -> &'a str {
        self.alg
    }

    /// Whether a key was given (possibly empty).
    pub fn has_key(&self) -> bool {
        self.key_hex.is_some()
    }

    /// Bytes of key (zero without one).
    pub fn key_len(&self) -> usize {
        self.key_hex.map_or(0, |k| k.len() / 2)
    }

    /// Decodes the key into the start of `out`; returns its length, or `None` if `out` is too
    /// short.
    pub fn decode_key(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.key_len();
        parse_hex_exact(self.key_hex.unwrap_or_default(), out.get_mut(..len)?)?;
        Some(len)
    }

    fn write(&self, w: &mut impl Write, sep: char, name: &str) -> fmt::Result {
        write!(
            w,
            "{sep}{name}{}{}",
            if sep == ' ' { ':' } else { '=' },
            self.alg
        )?;
        if let Some(key) = self.key_hex {
            w.write_char(':')?;
            // Checked hex digits are ASCII.
            w.write_str(core::str::from_utf8(key).unwrap_or_default())?;
        }
        Ok(())
    }
}

/// A parsed dm-integrity table line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrityTable<'a> {
    dev: &'a [u8],
    start: u64,
    /// 0: take the internal hash's digest size.
    tag_size: u32,
    mode: Mode,
    /// 0: the default, from the device size.
    journal_sectors: u32,
    interleave_sectors: u32,
    buffer_sectors: u32,
    journal_watermark: u32,
    commit_time_ms: u32,
    meta_device: Option<&'a [u8]>,
    log2_sectors_per_block: u32,
    log2_sectors_per_bitmap_bit: Option<u32>,
    bitmap_flush_interval_ms: u32,
    internal_hash: Option<AlgSpec<'a>>,
    journal_crypt: Option<AlgSpec<'a>>,
    journal_mac: Option<AlgSpec<'a>>,
    recalculate: bool,
    reset_recalculate: bool,
    allow_discards: bool,
    discard_keyed: bool,
    fix_padding: bool,
    fix_hmac: bool,
    legacy_recalculate: bool,
}

/// The number after `prefix` in `arg`, if `arg` is `prefix` followed by decimal digits.
fn number_after(arg: &[u8], prefix: &str) -> Option<u64> {
    parse_u64(arg.strip_prefix(prefix.as_bytes())?)
}

fn u32_after(arg: &[u8], prefix: &str) -> Option<u32> {
    number_after(arg, prefix).and_then(|v| u32::try_from(v).ok())
}

impl<'a> IntegrityTable<'a> {
    /// Parses a table line's arguments. `hz` is the kernel's tick rate (for the bound on
    /// `bitmap_flush_interval`). Arguments after the optional ones are left in `args`, as
    /// dm-integrity ignores them.
    pub fn parse(args: &mut Args<'a>, hz: u32) -> ArgResult<Self> {
        if args.remaining() <= DIRECT_ARGUMENTS {
            return Err(ArgError(c"Invalid argument count"));
        }
        let dev = args.next(c"Invalid argument count")?;
        let start = args.next_u64(c"Invalid starting offset")?;
        let tag_size = match args.next(c"Invalid tag size")? {
            b"-" => 0,
            s => parse_u64(s)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| v != 0)
                .ok_or(ArgError(c"Invalid tag size"))?,
        };
        let mode = match args.next(c"Invalid argument count")? {
            b"J" => Mode::Journal,
            b"D" => Mode::Direct,
            b"B" => Mode::Bitmap,
            b"R" => Mode::Recovery,
            b"I" => return Err(ArgError(c"Inline mode (I) is not supported")),
            _ => return Err(ArgError(c"Invalid mode (expecting J, B, D, R, I)")),
        };
        let mut opts = args.group(MAX_OPT_ARGS, c"Invalid number of feature args")?;
        let mut t = Self {
            dev,
            start,
            tag_size,
            mode,
            journal_sectors: 0,
            interleave_sectors: DEFAULT_INTERLEAVE_SECTORS,
            buffer_sectors: DEFAULT_BUFFER_SECTORS,
            journal_watermark: DEFAULT_JOURNAL_WATERMARK,
            commit_time_ms: DEFAULT_SYNC_MSEC,
            meta_device: None,
            log2_sectors_per_block: 0,
            log2_sectors_per_bitmap_bit: None,
            bitmap_flush_interval_ms: DEFAULT_BITMAP_FLUSH_MSEC,
            internal_hash: None,
            journal_crypt: None,
            journal_mac: None,
            recalculate: false,
            reset_recalculate: false,
            allow_discards: false,
            discard_keyed: false,
            fix_padding: false,
            fix_hmac: false,
            legacy_recalculate: false,
        };
        while !opts.is_empty() {
            let arg = opts.next(c"Not enough feature arguments")?;
            t.parse_option(arg, hz)?;
        }
        Ok(t)
    }

    fn parse_option(&mut self, arg: &'a [u8], hz: u32) -> ArgResult<()> {
        if let Some(v) = u32_after(arg, "journal_sectors:") {
            self.journal_sectors = v.max(1);
        } else if let Some(v) = u32_after(arg, "interleave_sectors:") {
            self.interleave_sectors = v;
        } else if let Some(v) = u32_after(arg, "buffer_sectors:") {
            self.buffer_sectors = v;
        } else if let Some(v) = u32_after(arg, "journal_watermark:").filter(|&v| v <= 100) {
            self.journal_watermark = v;
        } else if let Some(v) = u32_after(arg, "commit_time:") {
            self.commit_time_ms = v;
        } else if let Some(dev) = arg.strip_prefix(b"meta_device:") {
            self.meta_device = Some(dev);
        } else if let Some(v) = u32_after(arg, "block_size:") {
            let max = MAX_SECTORS_PER_BLOCK << SECTOR_SHIFT;
            if v < 1 << SECTOR_SHIFT || v > max || !v.is_power_of_two() {
                return Err(ArgError(c"Invalid block_size argument"));
            }
            self.log2_sectors_per_block = (v >> SECTOR_SHIFT).trailing_zeros();
        } else if let Some(v) = number_after(arg, "sectors_per_bit:") {
            self.log2_sectors_per_bitmap_bit = Some(if v == 0 { 0 } else { v.ilog2() });
        } else if let Some(v) = u32_after(arg, "bitmap_flush_interval:") {
            if u64::from(v) >= u64::from(u32::MAX) * 1000 / u64::from(hz.max(1)) {
                return Err(ArgError(c"Invalid bitmap_flush_interval argument"));
            }
            self.bitmap_flush_interval_ms = v;
        } else if let Some(rest) = arg.strip_prefix(b"internal_hash:") {
            self.internal_hash = Some(AlgSpec::parse(rest, c"Invalid internal_hash argument")?);
        } else if let Some(rest) = arg.strip_prefix(b"journal_crypt:") {
            self.journal_crypt = Some(AlgSpec::parse(rest, c"Invalid journal_crypt argument")?);
        } else if let Some(rest) = arg.strip_prefix(b"journal_mac:") {
            self.journal_mac = Some(AlgSpec::parse(rest, c"Invalid journal_mac argument")?);
        } else {
            match arg {
                b"recalculate" => self.recalculate = true,
                b"reset_recalculate" => {
                    self.recalculate = true;
                    self.reset_recalculate = true;
                }
                b"allow_discards" => self.allow_discards = true,
                b"allow_discards_keyed" => {
                    self.allow_discards = true;
                    self.discard_keyed = true;
                }
                b"fix_padding" => self.fix_padding = true,
                b"fix_hmac" => self.fix_hmac = true,
                b"legacy_recalculate" => self.legacy_recalculate = true,
                _ => return Err(ArgError(c"Invalid argument")),
            }
        }
        Ok(())
    }

    /// The checks dm-integrity makes once the internal hash is looked up (`digest_size` is its
    /// digest size, `None` without `internal_hash`), in its order. Returns the tag size in use.
    pub fn check(&self, digest_size: Option<u32>) -> ArgResult<u32> {
        let tag_size = match (self.tag_size, digest_size) {
            (0, None) => return Err(ArgError(c"Unknown tag size")),
            (0, Some(d)) => d,
            (t, _) => t,
        };
        if tag_size > MAX_TAG_SIZE {
            return Err(ArgError(c"Too big tag size"));
        }
        let internal = digest_size.is_some();
        if self.mode == Mode::Bitmap && !internal {
            return Err(ArgError(c"Bitmap mode can be only used with internal hash"));
        }
        if self.allow_discards && !internal {
            return Err(ArgError(c"Discard can be only used with internal hash"));
        }
        if self.discard_keyed && !self.internal_hash.is_some_and(|a| a.has_key()) {
            return Err(ArgError(
                c"Keyed discard can only be used with keyed internal hash",
            ));
        }
        Ok(tag_size)
    }

    /// Applies `recalculate` to the superblock read from the device (starting from sector 0
    /// unless it is already recalculating) and makes dm-integrity's checks of recalculation:
    /// it needs an internal hash, and with keys it is refused unless the superblock has
    /// `fix_hmac` (or `legacy_recalculate` is given); see [`HMAC_RECALCULATE_REFUSED`].
    pub fn apply_recalculate(
        &self,
        sb: &mut Superblock,
        provided_data_sectors: u64,
    ) -> ArgResult<()> {
        if self.recalculate && !sb.has(SB_FLAG_RECALCULATING) {
            sb.flags |= SB_FLAG_RECALCULATING;
            sb.recalc_sector = 0;
        }
        if self.internal_hash.is_none() && sb.has(SB_FLAG_RECALCULATING) {
            return Err(ArgError(
                c"Recalculate can only be specified with internal_hash",
            ));
        }
        if sb.has(SB_FLAG_RECALCULATING)
            && sb.recalc_sector < provided_data_sectors
            && self.recalculate_disabled(sb)
        {
            return Err(HMAC_RECALCULATE_REFUSED);
        }
        Ok(())
    }

    /// dm-integrity's `dm_integrity_disable_recalculate`.
    fn recalculate_disabled(&self, sb: &Superblock) -> bool {
        if self.legacy_recalculate {
            return false;
        }
        let internal_key = self.internal_hash.is_some_and(|a| a.has_key());
        let journal_key = self.journal_mac.is_some_and(|a| a.has_key());
        if sb.has(SB_FLAG_FIXED_HMAC) {
            internal_key && !journal_key
        } else {
            internal_key || journal_key
        }
    }

    /// The data device argument.
    pub fn dev(&self) -> &'a [u8] {
        self.dev
    }
    /// `<reserved_sectors>`: sectors at the start of the device left alone.
    pub fn start(&self) -> u64 {
        self.start
    }
    /// The tag size given; 0 for `-` (the internal hash's digest size).
    pub fn tag_size(&self) -> u32 {
        self.tag_size
    }
    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// `journal_sectors` (0 when not given: the caller uses the default for the device).
    pub fn journal_sectors(&self) -> u32 {
        self.journal_sectors
    }
    /// `interleave_sectors` (used only when formatting).
    pub fn interleave_sectors(&self) -> u32 {
        self.interleave_sectors
    }
    /// log2 of `buffer_sectors` as dm-integrity takes it (0 counts as 1; at most 2^22).
    pub fn log2_buffer_sectors(&self) -> u32 {
        self.buffer_sectors.max(1).ilog2().min(31 - SECTOR_SHIFT)
    }
    /// `journal_watermark`, percent.
    pub fn journal_watermark(&self) -> u32 {
        self.journal_watermark
    }
    /// `commit_time`, milliseconds.
    pub fn commit_time_ms(&self) -> u32 {
        self.commit_time_ms
    }
    /// `meta_device`.
    pub fn meta_device(&self) -> Option<&'a [u8]> {
        self.meta_device
    }
    /// log2 of the sectors per block (`block_size`).
    pub fn log2_sectors_per_block(&self) -> u32 {
        self.log2_sectors_per_block
    }
    /// log2 of `sectors_per_bit`, if given.
    pub fn log2_sectors_per_bitmap_bit(&self) -> Option<u32> {
        self.log2_sectors_per_bitmap_bit
    }
    /// `bitmap_flush_interval`, milliseconds as given.
    pub fn bitmap_flush_interval_ms(&self) -> u32 {
        self.bitmap_flush_interval_ms
    }
    /// `internal_hash`.
    pub fn internal_hash(&self) -> Option<AlgSpec<'a>> {
        self.internal_hash
    }
    /// `journal_crypt`.
    pub fn journal_crypt(&self) -> Option<AlgSpec<'a>> {
        self.journal_crypt
    }
    /// `journal_mac`.
    pub fn journal_mac(&self) -> Option<AlgSpec<'a>> {
        self.journal_mac
    }
    /// `recalculate` (or `reset_recalculate`).
    pub fn recalculate(&self) -> bool {
        self.recalculate
    }
    /// `reset_recalculate`.
    pub fn reset_recalculate(&self) -> bool {
        self.reset_recalculate
    }
    /// `allow_discards` (or `allow_discards_keyed`).
    pub fn allow_discards(&self) -> bool {
        self.allow_discards
    }
    /// `allow_discards_keyed`.
    pub fn discard_keyed(&self) -> bool {
        self.discard_keyed
    }
    /// `fix_padding`.
    pub fn fix_padding(&self) -> bool {
        self.fix_padding
    }
    /// `fix_hmac`.
    pub fn fix_hmac(&self) -> bool {
        self.fix_hmac
    }
    /// `legacy_recalculate`.
    pub fn legacy_recalculate(&self) -> bool {
        self.legacy_recalculate
    }

    /// Writes the status line (`STATUSTYPE_INFO`): mismatches seen, provided data sectors, and
    /// the recalculation position or `-`.
    pub fn write_info<W: Write>(&self, w: &mut W, state: &State<'_>) -> fmt::Result {
        write!(w, "{} {}", state.mismatches, state.provided_data_sectors)?;
        if state.superblock.has(SB_FLAG_RECALCULATING) {
            write!(w, " {}", state.superblock.recalc_sector)
        } else {
            w.write_str(" -")
        }
    }

    /// Writes the table line as dm-integrity reports it (`STATUSTYPE_TABLE`).
    pub fn write_table<W: Write>(&self, w: &mut W, state: &State<'_>) -> fmt::Result {
        let sb = state.superblock;
        let j = self.mode == Mode::Journal;
        let b = self.mode == Mode::Bitmap;
        let flags = [
            self.meta_device.is_some(),
            self.log2_sectors_per_block != 0,
            sb.has(SB_FLAG_RECALCULATING),
            self.reset_recalculate,
            self.allow_discards && !self.discard_keyed,
            self.discard_keyed,
            true, // interleave_sectors (every mode but I)
            true, // buffer_sectors
            j,
            j,
            j,
            b,
            b,
            self.internal_hash.is_some(),
            self.journal_crypt.is_some(),
            self.journal_mac.is_some(),
            sb.has(SB_FLAG_FIXED_PADDING),
            sb.has(SB_FLAG_FIXED_HMAC),
            self.legacy_recalculate,
        ];
        let count = flags.iter().filter(|f| **f).count();
        write!(
            w,
            "{} {} {} {} {count}",
            state.dev_name,
            self.start,
            state.tag_size,
            self.mode.letter()
        )?;
        if let Some(meta) = state.meta_dev_name {
            write!(w, " meta_device:{meta}")?;
        }
        if self.log2_sectors_per_block != 0 {
            write!(w, " block_size:{}", 512u32 << self.log2_sectors_per_block)?;
        }
        if sb.has(SB_FLAG_RECALCULATING) {
            w.write_str(" recalculate")?;
        }
        if self.reset_recalculate {
            w.write_str(" reset_recalculate")?;
        }
        if self.allow_discards && !self.discard_keyed {
            w.write_str(" allow_discards")?;
        }
        if self.discard_keyed {
            w.write_str(" allow_discards_keyed")?;
        }
        write!(w, " interleave_sectors:{}", state.interleave_sectors())?;
        write!(w, " buffer_sectors:{}", 1u32 << state.log2_buffer_sectors)?;
        if j {
            write!(w, " journal_sectors:{}", state.journal_sectors())?;
            write!(
                w,
                " journal_watermark:{}",
                watermark_percentage(state.journal_entries, self.journal_watermark)
            )?;
            write!(w, " commit_time:{}", self.commit_time_ms)?;
        }
        if b {
            let per_bit = 1u64 << (self.log2_sectors_per_block + state.log2_blocks_per_bitmap_bit);
            write!(w, " sectors_per_bit:{per_bit}")?;
            write!(
                w,
                " bitmap_flush_interval:{}",
                round_to_jiffies(self.bitmap_flush_interval_ms, state.hz)
            )?;
        }
        if sb.has(SB_FLAG_FIXED_PADDING) {
            w.write_str(" fix_padding")?;
        }
        if sb.has(SB_FLAG_FIXED_HMAC) {
            w.write_str(" fix_hmac")?;
        }
        if self.legacy_recalculate {
            w.write_str(" legacy_recalculate")?;
        }
        for (alg, name) in [
            (self.internal_hash, "internal_hash"),
            (self.journal_crypt, "journal_crypt"),
            (self.journal_mac, "journal_mac"),
        ] {
            if let Some(alg) = alg {
                alg.write(w, ' ', name)?;
            }
        }
        Ok(())
    }

    /// Writes the IMA measurement record (`STATUSTYPE_IMA`) after the
    /// `target_name=...,target_version=...` prefix, which the caller writes. Ends with `;`.
    pub fn write_ima<W: Write>(&self, w: &mut W, state: &State<'_>) -> fmt::Result {
        let sb = state.superblock;
        let yn = |b: bool| if b { 'y' } else { 'n' };
        write!(
            w,
            ",dev_name={},start={},tag_size={},mode={}",
            state.dev_name,
            self.start,
            state.tag_size,
            self.mode.letter()
        )?;
        if let Some(meta) = state.meta_dev_name {
            write!(w, ",meta_device={meta}")?;
        }
        if self.log2_sectors_per_block != 0 {
            write!(w, ",block_size={}", 512u32 << self.log2_sectors_per_block)?;
        }
        write!(
            w,
            ",recalculate={},allow_discards={},allow_discards_keyed={},fix_padding={}\
             ,fix_hmac={},legacy_recalculate={},journal_sectors={},interleave_sectors={}\
             ,buffer_sectors={};",
            yn(sb.has(SB_FLAG_RECALCULATING)),
            yn(self.allow_discards),
            yn(self.discard_keyed),
            yn(sb.has(SB_FLAG_FIXED_PADDING)),
            yn(sb.has(SB_FLAG_FIXED_HMAC)),
            yn(self.legacy_recalculate),
            state.journal_sectors(),
            state.interleave_sectors(),
            1u32 << state.log2_buffer_sectors,
        )
    }
}

/// Checks the table's length against the data sectors the device provides.
pub fn check_length(length: u64, provided_data_sectors: u64) -> ArgResult<()> {
    if length > provided_data_sectors {
        return Err(ArgError(
            c"Not enough provided sectors for requested mapping size",
        ));
    }
    Ok(())
}

/// What the status lines report beyond the table line: the target's state.
#[derive(Clone, Copy, Debug)]
pub struct State<'s> {
    /// The data device, `major:minor`.
    pub dev_name: &'s str,
    /// The metadata device, `major:minor`.
    pub meta_dev_name: Option<&'s str>,
    /// The superblock in memory (flags, interleave, recalculation position).
    pub superblock: &'s Superblock,
    /// The tag size in use.
    pub tag_size: u32,
    /// Data sectors provided.
    pub provided_data_sectors: u64,
    /// Tag mismatches seen.
    pub mismatches: u64,
    /// log2 of the metadata buffer in use.
    pub log2_buffer_sectors: u32,
    /// Superblock and journal sectors.
    pub initial_sectors: u32,
    /// Entries in the whole journal.
    pub journal_entries: u32,
    /// log2 of the blocks per bitmap bit in use.
    pub log2_blocks_per_bitmap_bit: u32,
    /// The kernel's tick rate.
    pub hz: u32,
}

impl State<'_> {
    fn interleave_sectors(&self) -> u64 {
        1u64 << (self.superblock.log2_interleave_sectors & 63)
    }

    fn journal_sectors(&self) -> u32 {
        self.initial_sectors.saturating_sub(8)
    }
}

/// Free journal entries below which dm-integrity starts writing the journal back
/// (`free_sectors_threshold`), for a watermark in percent.
pub fn free_sectors_threshold(journal_entries: u32, watermark: u32) -> u32 {
    let wm = u64::from(watermark.min(100));
    // At most journal_entries: fits.
    ((u64::from(journal_entries) * (100 - wm) + 50) / 100) as u32
}

/// The watermark dm-integrity reports: recomputed from the threshold, so rounded to what the
/// journal's size allows.
pub fn watermark_percentage(journal_entries: u32, watermark: u32) -> u32 {
    if journal_entries == 0 {
        return 0;
    }
    let threshold = free_sectors_threshold(journal_entries, watermark);
    let entries = u64::from(journal_entries);
    let used = entries - u64::from(threshold.min(journal_entries));
    // At most 100.
    ((used * 100 + entries / 2) / entries) as u32
}

/// A time in milliseconds as the kernel keeps it in jiffies and prints it back
/// (`jiffies_to_msecs(msecs_to_jiffies(ms))`): rounded up to a tick. Exact for tick rates
/// that divide 1000 (Debian's is 250).
pub fn round_to_jiffies(ms: u32, hz: u32) -> u64 {
    let hz = u64::from(hz.max(1));
    let jiffies = (u64::from(ms) * hz).div_ceil(1000);
    (jiffies * 1000).div_ceil(hz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    const HZ: u32 = 250;

    fn parse(line: &str) -> ArgResult<IntegrityTable<'static>> {
        let line: &'static str = String::from(line).leak();
        let argv: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        IntegrityTable::parse(&mut Args::new(argv.leak()), HZ)
    }

    fn error(line: &str) -> &'static CStr {
        parse(line).expect_err(line).0
    }

    fn sb(flags: u32) -> Superblock {
        Superblock {
            version: 1,
            log2_interleave_sectors: 15,
            integrity_tag_size: 4,
            journal_sections: 2,
            provided_data_sectors: 64664,
            flags,
            log2_sectors_per_block: 0,
            log2_blocks_per_bitmap_bit: 15,
            recalc_sector: 4096,
            salt: [0; 16],
        }
    }

    fn state(sb: &Superblock) -> State<'_> {
        State {
            dev_name: "7:0",
            meta_dev_name: None,
            superblock: sb,
            tag_size: 4,
            provided_data_sectors: 64664,
            mismatches: 3,
            log2_buffer_sectors: 7,
            initial_sectors: 8 + 2 * 176,
            journal_entries: 2 * 168,
            log2_blocks_per_bitmap_bit: 15,
            hz: HZ,
        }
    }

    fn table_line(t: &IntegrityTable<'_>, s: &State<'_>) -> String {
        let mut out = String::new();
        t.write_table(&mut out, s).unwrap();
        out
    }

    #[test]
    fn fields_and_defaults() {
        let t = parse("/dev/sda 0 - J 1 internal_hash:crc32c").unwrap();
        assert_eq!(t.dev(), b"/dev/sda");
        assert_eq!((t.start(), t.tag_size(), t.mode()), (0, 0, Mode::Journal));
        assert_eq!(t.journal_sectors(), 0);
        assert_eq!(t.interleave_sectors(), 32768);
        assert_eq!(t.log2_buffer_sectors(), 7);
        assert_eq!((t.journal_watermark(), t.commit_time_ms()), (50, 10000));
        assert_eq!(t.bitmap_flush_interval_ms(), 10000);
        assert_eq!(t.log2_sectors_per_bitmap_bit(), None);
        assert_eq!(t.internal_hash().unwrap().alg(), "crc32c");
        assert!(!t.internal_hash().unwrap().has_key());
        assert_eq!(t.check(Some(4)), Ok(4));

        let t = parse(
            "8:1 16 32 B 18 journal_sectors:0 interleave_sectors:1024 buffer_sectors:0 \
             journal_watermark:100 commit_time:5 meta_device:8:2 block_size:4096 \
             sectors_per_bit:100000 bitmap_flush_interval:7 internal_hash:hmac(sha256):00ff \
             journal_crypt:ctr(aes):0011 journal_mac:hmac(sha1) recalculate allow_discards_keyed \
             fix_padding fix_hmac legacy_recalculate reset_recalculate",
        )
        .unwrap();
        assert_eq!((t.start(), t.tag_size(), t.mode()), (16, 32, Mode::Bitmap));
        assert_eq!(t.journal_sectors(), 1, "journal_sectors:0 means 1");
        assert_eq!(t.interleave_sectors(), 1024);
        assert_eq!(t.log2_buffer_sectors(), 0, "buffer_sectors:0 means 1");
        assert_eq!((t.journal_watermark(), t.commit_time_ms()), (100, 5));
        assert_eq!(t.meta_device(), Some(&b"8:2"[..]));
        assert_eq!(t.log2_sectors_per_block(), 3);
        assert_eq!(t.log2_sectors_per_bitmap_bit(), Some(16));
        assert_eq!(t.bitmap_flush_interval_ms(), 7);
        let h = t.internal_hash().unwrap();
        assert_eq!((h.alg(), h.key_len()), ("hmac(sha256)", 2));
        let mut key = [0u8; 4];
        assert_eq!(h.decode_key(&mut key), Some(2));
        assert_eq!(key[..2], [0, 0xff]);
        assert_eq!(h.decode_key(&mut [0u8; 1]), None);
        // Upper-case hex digits (hex2bin takes both cases), and an empty key: a key of 0 bytes,
        // which dm-integrity hands to the hash as it is (hmac takes it).
        let upper = parse("a 0 - D 1 internal_hash:hmac(sha256):A0fF").unwrap();
        let mut key = [0u8; 2];
        assert_eq!(upper.internal_hash().unwrap().decode_key(&mut key), Some(2));
        assert_eq!(key, [0xa0, 0xff]);
        let empty = parse("a 0 - D 1 internal_hash:hmac(sha256):").unwrap();
        let h = empty.internal_hash().unwrap();
        assert!(h.has_key());
        assert_eq!((h.key_len(), h.decode_key(&mut [])), (0, Some(0)));
        assert_eq!(t.journal_crypt().unwrap().alg(), "ctr(aes)");
        assert_eq!(t.journal_mac().unwrap().alg(), "hmac(sha1)");
        assert!(t.recalculate() && t.reset_recalculate() && t.allow_discards());
        assert!(t.discard_keyed() && t.fix_padding() && t.fix_hmac() && t.legacy_recalculate());
        assert_eq!(t.check(Some(32)), Ok(32));
        // buffer_sectors is capped at 2^22, sectors_per_bit:0 is one sector per bit.
        let t = parse("a 0 4 D 2 buffer_sectors:4294967295 sectors_per_bit:0").unwrap();
        assert_eq!(t.log2_buffer_sectors(), 22);
        assert_eq!(t.log2_sectors_per_bitmap_bit(), Some(0));
        // Later options win; arguments after the group are left over.
        let argv: Vec<&[u8]> = "a 0 4 D 2 commit_time:1 commit_time:2 extra"
            .split(' ')
            .map(str::as_bytes)
            .collect();
        let mut args = Args::new(&argv);
        let t = IntegrityTable::parse(&mut args, HZ).unwrap();
        assert_eq!(t.commit_time_ms(), 2);
        assert_eq!(args.remaining(), 1);
    }

    #[test]
    fn errors() {
        let cases: &[(&CStr, &[&str])] = &[
            (c"Invalid argument count", &["a 0 - J", "a 0 -"]),
            (
                c"Invalid starting offset",
                &["a x - J 0", "a -1 - J 0", "a 18446744073709551616 - J 0"],
            ),
            (
                c"Invalid tag size",
                &["a 0 0 J 0", "a 0 x J 0", "a 0 4294967296 J 0"],
            ),
            (
                c"Invalid mode (expecting J, B, D, R, I)",
                &["a 0 - j 0", "a 0 - JD 0", "a 0 - X 0"],
            ),
            (c"Inline mode (I) is not supported", &["a 0 - I 0"]),
            (
                c"Invalid number of feature args",
                &["a 0 - J x", "a 0 - J 19", "a 0 - J 2 recalculate"],
            ),
            (
                c"Invalid argument",
                &[
                    "a 0 - J 1 bogus",
                    "a 0 - J 1 journal_sectors:x",
                    "a 0 - J 1 journal_sectors:4294967296",
                    "a 0 - J 1 journal_watermark:101",
                    "a 0 - J 1 commit_time:-1",
                    "a 0 - J 1 Recalculate",
                    "a 0 - J 1 block_size:4k",
                    "a 0 - J 1 sectors_per_bit:",
                ],
            ),
            (
                c"Invalid block_size argument",
                &[
                    "a 0 - J 1 block_size:256",
                    "a 0 - J 1 block_size:8192",
                    "a 0 - J 1 block_size:1536",
                ],
            ),
            (
                c"Invalid internal_hash argument",
                &[
                    "a 0 - J 1 internal_hash:sha256:0",
                    "a 0 - J 1 internal_hash:hmac(sha256):zz",
                    // dm-integrity 1.15 takes keys in hex only: a keyring reference (dm-crypt's
                    // `:<size>:logon:<desc>`) is an odd-length or non-hex key to it.
                    "a 0 - J 1 internal_hash:hmac(sha256):32:logon:rs_key",
                    "a 0 - J 1 internal_hash:hmac(sha256):32:logon:rs_ke",
                    "a 0 - J 1 internal_hash:hmac(sha256)::",
                ],
            ),
            (
                c"Invalid journal_crypt argument",
                &["a 0 - J 1 journal_crypt:cbc(aes):abc"],
            ),
            (
                c"Invalid journal_mac argument",
                &["a 0 - J 1 journal_mac:hmac(sha256):0g"],
            ),
        ];
        for (want, lines) in cases {
            for line in *lines {
                assert_eq!(error(line), *want, "{line}");
            }
        }
        // The flush interval's bound depends on the tick rate: never reached at 250 Hz.
        let argv: [&[u8]; 6] = [
            b"a",
            b"0",
            b"-",
            b"B",
            b"1",
            b"bitmap_flush_interval:4294967295",
        ];
        assert!(IntegrityTable::parse(&mut Args::new(&argv), 250).is_ok());
        assert_eq!(
            IntegrityTable::parse(&mut Args::new(&argv), 2000),
            Err(ArgError(c"Invalid bitmap_flush_interval argument"))
        );
    }

    #[test]
    fn checks_after_lookup() {
        let check = |line: &str, digest: Option<u32>| parse(line).unwrap().check(digest);
        assert_eq!(check("a 0 - J 0", None), Err(ArgError(c"Unknown tag size")));
        assert_eq!(
            check("a 0 256 J 0", None),
            Err(ArgError(c"Too big tag size"))
        );
        assert_eq!(
            check("a 0 - J 1 internal_hash:x", Some(256)),
            Err(ArgError(c"Too big tag size"))
        );
        assert_eq!(check("a 0 12 J 1 internal_hash:sha256", Some(32)), Ok(12));
        assert_eq!(
            check("a 0 16 D 0", None),
            Ok(16),
            "tags for the layer above"
        );
        assert_eq!(
            check("a 0 4 B 0", None),
            Err(ArgError(c"Bitmap mode can be only used with internal hash"))
        );
        assert_eq!(
            check("a 0 4 J 1 allow_discards", None),
            Err(ArgError(c"Discard can be only used with internal hash"))
        );
        assert_eq!(
            check(
                "a 0 - J 2 allow_discards_keyed internal_hash:sha256",
                Some(32)
            ),
            Err(ArgError(
                c"Keyed discard can only be used with keyed internal hash"
            ))
        );
        assert_eq!(
            check(
                "a 0 - J 2 allow_discards_keyed internal_hash:hmac(sha256):00",
                Some(32)
            ),
            Ok(32)
        );
    }

    #[test]
    fn recalculation_rules() {
        let apply = |line: &str, flags: u32| {
            let mut s = sb(flags);
            let r = parse(line).unwrap().apply_recalculate(&mut s, 64664);
            (r, s.has(SB_FLAG_RECALCULATING), s.recalc_sector)
        };
        // recalculate starts from 0, unless already recalculating.
        assert_eq!(
            apply("a 0 - J 2 recalculate internal_hash:crc32c", 0),
            (Ok(()), true, 0)
        );
        assert_eq!(
            apply(
                "a 0 - J 2 recalculate internal_hash:crc32c",
                SB_FLAG_RECALCULATING
            ),
            (Ok(()), true, 4096)
        );
        assert_eq!(
            apply("a 0 - J 1 internal_hash:crc32c", 0),
            (Ok(()), false, 4096)
        );
        let no_hash = Err(ArgError(
            c"Recalculate can only be specified with internal_hash",
        ));
        assert_eq!(apply("a 0 4 J 1 recalculate", 0).0, no_hash);
        assert_eq!(apply("a 0 4 J 0", SB_FLAG_RECALCULATING).0, no_hash);
        // Keyed hashes: refused without fix_hmac in the superblock ...
        let keyed = "a 0 - J 2 recalculate internal_hash:hmac(sha256):00";
        assert_eq!(apply(keyed, 0).0, Err(HMAC_RECALCULATE_REFUSED));
        let legacy = "a 0 - J 3 recalculate internal_hash:hmac(sha256):00 legacy_recalculate";
        assert_eq!(apply(legacy, 0).0, Ok(()));
        // ... and with it, when the journal has no keyed MAC.
        assert_eq!(
            apply(keyed, SB_FLAG_FIXED_HMAC).0,
            Err(HMAC_RECALCULATE_REFUSED)
        );
        let both =
            "a 0 - J 3 recalculate internal_hash:hmac(sha256):00 journal_mac:hmac(sha256):11";
        assert_eq!(apply(both, SB_FLAG_FIXED_HMAC).0, Ok(()));
        assert_eq!(apply(both, 0).0, Err(HMAC_RECALCULATE_REFUSED));
        // A journal MAC key alone is refused on an old superblock too.
        let jmac = "a 0 - J 3 recalculate internal_hash:sha256 journal_mac:hmac(sha256):11";
        assert_eq!(apply(jmac, 0).0, Err(HMAC_RECALCULATE_REFUSED));
        assert_eq!(apply(jmac, SB_FLAG_FIXED_HMAC).0, Ok(()));
        // Nothing left to recalculate: not refused.
        let mut done = sb(SB_FLAG_RECALCULATING);
        done.recalc_sector = 64664;
        assert_eq!(
            parse(keyed).unwrap().apply_recalculate(&mut done, 64664),
            Ok(())
        );
    }

    #[test]
    fn status_lines() {
        let t = parse("a 0 - J 1 internal_hash:crc32c").unwrap();
        let plain = sb(0);
        let mut out = String::new();
        t.write_info(&mut out, &state(&plain)).unwrap();
        assert_eq!(out, "3 64664 -");
        let recalc = sb(SB_FLAG_RECALCULATING);
        out.clear();
        t.write_info(&mut out, &state(&recalc)).unwrap();
        assert_eq!(out, "3 64664 4096");
        // The journal's 336 entries: threshold (336 * 50 + 50) / 100 = 168; reported 50.
        assert_eq!(
            table_line(&t, &state(&plain)),
            "7:0 0 4 J 6 interleave_sectors:32768 buffer_sectors:128 journal_sectors:352 \
             journal_watermark:50 commit_time:10000 internal_hash:crc32c"
        );
        // recalculate, fix_padding and fix_hmac come from the superblock.
        let flags = sb(SB_FLAG_RECALCULATING | SB_FLAG_FIXED_PADDING | SB_FLAG_FIXED_HMAC);
        let t = parse(
            "a 8 32 B 8 block_size:4096 meta_device:x allow_discards legacy_recalculate \
             internal_hash:hmac(sha256):0a0b journal_mac:hmac(sha256):0c journal_crypt:cbc(aes):0d \
             bitmap_flush_interval:10001",
        )
        .unwrap();
        let s = State {
            meta_dev_name: Some("7:1"),
            tag_size: 32,
            log2_blocks_per_bitmap_bit: 12,
            ..state(&flags)
        };
        assert_eq!(
            table_line(&t, &s),
            "7:0 8 32 B 14 meta_device:7:1 block_size:4096 recalculate allow_discards \
             interleave_sectors:32768 buffer_sectors:128 sectors_per_bit:32768 \
             bitmap_flush_interval:10004 fix_padding fix_hmac legacy_recalculate \
             internal_hash:hmac(sha256):0a0b journal_crypt:cbc(aes):0d journal_mac:hmac(sha256):0c"
        );
        let t = parse("a 0 4 R 2 reset_recalculate allow_discards_keyed").unwrap();
        assert_eq!(
            table_line(&t, &state(&recalc)),
            "7:0 0 4 R 5 recalculate reset_recalculate allow_discards_keyed \
             interleave_sectors:32768 buffer_sectors:128"
        );
        out.clear();
        t.write_ima(&mut out, &state(&recalc)).unwrap();
        assert_eq!(
            out,
            ",dev_name=7:0,start=0,tag_size=4,mode=R,recalculate=y,allow_discards=y\
             ,allow_discards_keyed=y,fix_padding=n,fix_hmac=n,legacy_recalculate=n\
             ,journal_sectors=352,interleave_sectors=32768,buffer_sectors=128;"
        );
        let t = parse("a 0 4 D 2 block_size:1024 fix_padding").unwrap();
        out.clear();
        t.write_ima(
            &mut out,
            &State {
                meta_dev_name: Some("7:1"),
                ..state(&flags)
            },
        )
        .unwrap();
        assert!(out.starts_with(",dev_name=7:0,start=0,tag_size=4,mode=D,meta_device=7:1,block_size=1024,recalculate=y"), "{out}");
        assert!(out.contains(",fix_padding=y,fix_hmac=y,"), "{out}");
    }

    #[test]
    fn mapping_length() {
        assert_eq!(check_length(64664, 64664), Ok(()));
        assert_eq!(check_length(1, 64664), Ok(()));
        assert_eq!(
            check_length(64665, 64664),
            Err(ArgError(
                c"Not enough provided sectors for requested mapping size"
            ))
        );
    }

    #[test]
    fn watermark_rounding() {
        assert_eq!(free_sectors_threshold(336, 50), 168);
        assert_eq!(watermark_percentage(336, 50), 50);
        // Few entries: the percentage is what the threshold allows.
        assert_eq!(free_sectors_threshold(3, 66), 1);
        assert_eq!(watermark_percentage(3, 66), 67);
        assert_eq!(watermark_percentage(0, 50), 0);
        assert_eq!(watermark_percentage(u32::MAX, 0), 0);
        assert_eq!(watermark_percentage(u32::MAX, 100), 100);
        assert_eq!(round_to_jiffies(10000, 250), 10000);
        assert_eq!(round_to_jiffies(1, 250), 4);
        assert_eq!(round_to_jiffies(0, 250), 0);
        assert_eq!(round_to_jiffies(u32::MAX, 1000), u64::from(u32::MAX));
    }
}
