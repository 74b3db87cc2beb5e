// SPDX-License-Identifier: GPL-2.0

//! Recalculation bookkeeping: which range the worker takes next, when it checkpoints the
//! position into the superblock, which reads are checked while it runs, what resume does with
//! the position, and the pause and rate-limit controls set by `dmsetup message`.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`. Time is an input (nanoseconds from any
//! monotonic clock), never read here.
//!
//! The worker, as dm-integrity's: take the range at `recalc_sector` (at most
//! [`RECALC_SECTORS`], never across an interleave area), lock it against writes, read the data,
//! write the tags, advance `recalc_sector` in memory; every [`RECALC_WRITE_SUPER`] ranges, and
//! when it stops, write the superblock. A crash therefore redoes at most
//! [`max_redo_sectors`] sectors, and redoing is harmless (the tags come out the same).

use core::num::NonZeroU64;

use crate::dm_args::{ArgError, ArgResult, Args};
use crate::integrity_superblock::{Superblock, SB_FLAG_RECALCULATING};

/// Most sectors recalculated at once (`RECALC_SECTORS`, 64-bit kernels).
pub const RECALC_SECTORS: u32 = 32768;

/// The superblock is written every this many ranges (`RECALC_WRITE_SUPER`).
pub const RECALC_WRITE_SUPER: u32 = 16;

/// Largest rate accepted by `recalculate_rate`, in MB/s (1 TB/s): keeps the arithmetic in 64
/// bits.
pub const MAX_RATE_MB: u64 = 1_000_000;

const NSEC_PER_SEC: u64 = 1_000_000_000;
const NSEC_PER_USEC: u64 = 1_000;
const BYTES_PER_MB: u64 = 1_000_000;

/// A range of logical sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First sector.
    pub start: u64,
    /// Number of sectors.
    pub sectors: u64,
}

impl Range {
    /// The sector after the range.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.sectors)
    }
}

/// The next range to recalculate from `recalc_sector`, or `None` when the end is reached:
/// at most `chunk_sectors`, not past `provided_data_sectors`, and not across an interleave area
/// (`log2_interleave_sectors` is `None` with a metadata device, which has no areas).
pub fn next_range(
    recalc_sector: u64,
    provided_data_sectors: u64,
    log2_interleave_sectors: Option<u32>,
    chunk_sectors: u32,
) -> Option<Range> {
    if recalc_sector >= provided_data_sectors {
        return None;
    }
    let mut sectors = u64::from(chunk_sectors).min(provided_data_sectors - recalc_sector);
    if let Some(log2) = log2_interleave_sectors.filter(|l| *l < 64) {
        let area = 1u64 << log2;
        let offset = recalc_sector & (area - 1);
        sectors = sectors.min(area - offset);
    }
    Some(Range {
        start: recalc_sector,
        sectors,
    })
}

/// The most sectors a crash makes the worker redo: one checkpoint interval of full ranges.
pub fn max_redo_sectors() -> u64 {
    u64::from(RECALC_SECTORS) * u64::from(RECALC_WRITE_SUPER)
}

/// Counts ranges between superblock writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoints {
    since_write: u32,
}

impl Checkpoints {
    /// Called before each range, with the position not yet advanced: whether to write the
    /// superblock (with that position) first. True every [`RECALC_WRITE_SUPER`] ranges.
    pub fn before_range(&mut self) -> bool {
        self.since_write += 1;
        if self.since_write >= RECALC_WRITE_SUPER {
            self.since_write = 0;
            true
        } else {
            false
        }
    }
}

/// Whether a read of `sectors` sectors at `start` is checked against its tags: always, except
/// while recalculating for a read reaching at or past the position (its tags may not be
/// computed yet).
pub fn read_is_checked(sb: &Superblock, start: u64, sectors: u64) -> bool {
    !sb.has(SB_FLAG_RECALCULATING) || start.saturating_add(sectors) <= sb.recalc_sector
}

/// What resume does about recalculation (dm-integrity's resume, without the bitmap's part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnResume {
    /// Start the worker.
    pub start_worker: bool,
    /// The superblock changed and must be written.
    pub write_superblock: bool,
}

/// Updates the superblock for a resume: `reset_recalculate` restarts from 0; a position past
/// the end (the device shrank) is clamped to it; the worker runs while the position is below
/// the end.
pub fn on_resume(sb: &mut Superblock, provided_data_sectors: u64, reset: bool) -> OnResume {
    let mut write_superblock = false;
    if reset {
        sb.flags |= SB_FLAG_RECALCULATING;
        sb.recalc_sector = 0;
    }
    let mut start_worker = false;
    if sb.has(SB_FLAG_RECALCULATING) {
        if sb.recalc_sector < provided_data_sectors {
            start_worker = true;
        } else if sb.recalc_sector > provided_data_sectors {
            sb.recalc_sector = provided_data_sectors;
            write_superblock = true;
        }
    }
    OnResume {
        start_worker,
        write_superblock,
    }
}

/// A `dmsetup message` to the recalculation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// `recalculate_pause`: stop after the current range (the position is written).
    Pause,
    /// `recalculate_resume`: continue.
    Resume,
    /// `recalculate_rate <MB/s>`: limit the rate; 0 removes the limit.
    Rate(u32),
}

impl Message {
    /// Parses a message's arguments.
    pub fn parse(args: &mut Args<'_>) -> ArgResult<Self> {
        const UNKNOWN: ArgError = ArgError(c"Invalid message");
        let msg = match args.next(UNKNOWN.0)? {
            b"recalculate_pause" => Self::Pause,
            b"recalculate_resume" => Self::Resume,
            b"recalculate_rate" => {
                let rate = args.next_u64_in(0, MAX_RATE_MB, c"Invalid recalculate_rate")?;
                // At most MAX_RATE_MB, which fits.
                Self::Rate(rate as u32)
            }
            _ => return Err(UNKNOWN),
        };
        args.finish(c"Invalid number of message arguments")?;
        Ok(msg)
    }
}

/// A token bucket limiting the bytes per second, with at most one second of burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Bytes per second; 0 is unlimited.
    rate: u64,
    /// Bytes that may pass now; negative after a request larger than what was available.
    credit: i64,
    /// When `credit` was last refilled.
    last_ns: u64,
}

impl RateLimit {
    /// A limit of `mb_per_s` MB/s (1 MB = 10^6 bytes; 0: unlimited; capped at
    /// [`MAX_RATE_MB`]), starting at `now_ns` with a full second of credit.
    pub fn new(mb_per_s: u32, now_ns: u64) -> Self {
        let rate = u64::from(mb_per_s).min(MAX_RATE_MB) * BYTES_PER_MB;
        Self {
            rate,
            credit: rate as i64,
            last_ns: now_ns,
        }
    }

    /// The limit in bytes per second (0: unlimited).
    pub fn bytes_per_second(&self) -> u64 {
        self.rate
    }

    fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        if elapsed >= NSEC_PER_SEC {
            self.credit = self.rate as i64;
            self.last_ns = now_ns;
            return;
        }
        // Whole microseconds only, so that nothing is lost between calls: at most 10^6 us
        // times at most 10^12 bytes/s fits in 64 bits.
        let us = elapsed / NSEC_PER_USEC;
        let gained = us * self.rate / 1_000_000;
        self.last_ns += us * NSEC_PER_USEC;
        self.credit = (self.credit + gained as i64).min(self.rate as i64);
    }

    /// Asks to process `bytes` at `now_ns`. `Ok`: go (the bytes are charged, possibly into
    /// debt, so a request larger than a second's worth still passes once). `Err(ns)`: wait
    /// that long, then ask again.
    pub fn admit(&mut self, now_ns: u64, bytes: u64) -> Result<(), u64> {
        let Some(rate) = NonZeroU64::new(self.rate) else {
            return Ok(());
        };
        self.refill(now_ns);
        if self.credit > 0 {
            self.credit = self
                .credit
                .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
            return Ok(());
        }
        // Until the credit is positive again, rounded up to a microsecond.
        let missing = self.credit.unsigned_abs() + 1;
        let scaled = missing.saturating_mul(1_000_000);
        let us = scaled / rate + u64::from(scaled % rate != 0);
        Err(us.max(1).saturating_mul(NSEC_PER_USEC))
    }
}

/// What the worker should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Recalculate the next range now.
    Go,
    /// Wait this many nanoseconds (rate limit), then ask again.
    Wait(u64),
    /// Stop until resumed (write the superblock first).
    Paused,
}

/// The controls `dmsetup message` sets: pause and rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    paused: bool,
    limit: RateLimit,
}

impl Control {
    /// Running, unlimited.
    pub fn new(now_ns: u64) -> Self {
        Self {
            paused: false,
            limit: RateLimit::new(0, now_ns),
        }
    }

    /// Applies a message; returns whether the worker must be woken (resumed, or the rate
    /// changed while it may be waiting).
    pub fn apply(&mut self, msg: Message, now_ns: u64) -> bool {
        match msg {
            Message::Pause => {
                self.paused = true;
                false
            }
            Message::Resume => core::mem::replace(&mut self.paused, false),
            Message::Rate(mb) => {
                self.limit = RateLimit::new(mb, now_ns);
                !self.paused
            }
        }
    }

    /// Whether paused by message.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The rate limit, bytes per second (0: none).
    pub fn bytes_per_second(&self) -> u64 {
        self.limit.bytes_per_second()
    }

    /// Asked by the worker before each range of `bytes` bytes.
    pub fn step(&mut self, now_ns: u64, bytes: u64) -> Step {
        if self.paused {
            return Step::Paused;
        }
        match self.limit.admit(now_ns, bytes) {
            Ok(()) => Step::Go,
            Err(ns) => Step::Wait(ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(flags: u32, recalc_sector: u64) -> Superblock {
        Superblock {
            version: 2,
            flags,
            recalc_sector,
            ..Superblock::default()
        }
    }

    #[test]
    fn ranges_walk_the_device() {
        // 100000 sectors, areas of 32768: ranges stop at each area's end and at the device's.
        let mut pos = 0;
        let mut ranges = std::vec::Vec::new();
        while let Some(r) = next_range(pos, 100_000, Some(15), RECALC_SECTORS) {
            assert!(r.sectors > 0);
            ranges.push((r.start, r.sectors));
            pos = r.end();
        }
        assert_eq!(
            ranges,
            [(0, 32768), (32768, 32768), (65536, 32768), (98304, 1696)]
        );
        // A position inside an area goes to the area's end.
        assert_eq!(
            next_range(1000, 100_000, Some(12), RECALC_SECTORS),
            Some(Range {
                start: 1000,
                sectors: 4096 - 1000
            })
        );
        // Without areas, only the chunk and the end limit.
        assert_eq!(
            next_range(1000, 100_000, None, RECALC_SECTORS),
            Some(Range {
                start: 1000,
                sectors: 32768
            })
        );
        assert_eq!(next_range(100_000, 100_000, None, RECALC_SECTORS), None);
        assert_eq!(next_range(u64::MAX, 100_000, None, RECALC_SECTORS), None);
        assert_eq!(
            next_range(u64::MAX - 1, u64::MAX, Some(31), RECALC_SECTORS),
            Some(Range {
                start: u64::MAX - 1,
                sectors: 1
            })
        );
    }

    #[test]
    fn checkpoints_every_sixteen_ranges() {
        let mut c = Checkpoints::default();
        let writes: std::vec::Vec<u32> = (1..=40).filter(|_| c.before_range()).collect();
        assert_eq!(writes, [16, 32]);
        // The position on disk lags by at most one interval.
        assert_eq!(max_redo_sectors(), 16 * 32768);
    }

    #[test]
    fn which_reads_are_checked() {
        assert!(read_is_checked(&sb(0, 0), 0, 8));
        let s = sb(SB_FLAG_RECALCULATING, 1000);
        assert!(read_is_checked(&s, 992, 8));
        assert!(!read_is_checked(&s, 993, 8));
        assert!(!read_is_checked(&s, 1000, 1));
        assert!(!read_is_checked(&s, u64::MAX, 8));
        assert!(read_is_checked(&sb(SB_FLAG_RECALCULATING, u64::MAX), 0, 8));
    }

    #[test]
    fn resume() {
        let mut s = sb(SB_FLAG_RECALCULATING, 500);
        assert_eq!(
            on_resume(&mut s, 1000, false),
            OnResume {
                start_worker: true,
                write_superblock: false
            }
        );
        assert_eq!(s.recalc_sector, 500);
        let mut s = sb(SB_FLAG_RECALCULATING, 1000);
        assert_eq!(
            on_resume(&mut s, 1000, false),
            OnResume {
                start_worker: false,
                write_superblock: false
            }
        );
        let mut s = sb(SB_FLAG_RECALCULATING, 5000);
        assert_eq!(
            on_resume(&mut s, 1000, false),
            OnResume {
                start_worker: false,
                write_superblock: true
            }
        );
        assert_eq!(s.recalc_sector, 1000);
        let mut s = sb(0, 700);
        assert_eq!(
            on_resume(&mut s, 1000, true),
            OnResume {
                start_worker: true,
                write_superblock: false
            }
        );
        assert!(s.has(SB_FLAG_RECALCULATING));
        assert_eq!(s.recalc_sector, 0);
        let mut s = sb(0, 700);
        assert!(!on_resume(&mut s, 1000, false).start_worker);
    }

    fn message(words: &[&str]) -> ArgResult<Message> {
        let argv: std::vec::Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        Message::parse(&mut Args::new(&argv))
    }

    #[test]
    fn messages() {
        assert_eq!(message(&["recalculate_pause"]), Ok(Message::Pause));
        assert_eq!(message(&["recalculate_resume"]), Ok(Message::Resume));
        assert_eq!(message(&["recalculate_rate", "0"]), Ok(Message::Rate(0)));
        assert_eq!(
            message(&["recalculate_rate", "1000000"]),
            Ok(Message::Rate(1_000_000))
        );
        for (words, want) in [
            (&[][..], c"Invalid message"),
            (&["pause"][..], c"Invalid message"),
            (&["recalculate_rate"][..], c"Invalid recalculate_rate"),
            (
                &["recalculate_rate", "1000001"][..],
                c"Invalid recalculate_rate",
            ),
            (&["recalculate_rate", "-1"][..], c"Invalid recalculate_rate"),
            (
                &["recalculate_pause", "now"][..],
                c"Invalid number of message arguments",
            ),
        ] {
            assert_eq!(message(words), Err(ArgError(want)), "{words:?}");
        }
    }

    /// Runs a worker of `chunk`-byte ranges for `seconds` of simulated time under `limit`;
    /// returns the bytes it processed.
    fn simulate(mb: u32, chunk: u64, seconds: u64) -> u64 {
        let mut c = Control::new(0);
        c.apply(Message::Rate(mb), 0);
        let (mut now, mut done) = (0u64, 0u64);
        let end = seconds * NSEC_PER_SEC;
        while now < end {
            match c.step(now, chunk) {
                Step::Go => {
                    done += chunk;
                    now += 1000; // the work itself takes a microsecond
                }
                Step::Wait(ns) => {
                    assert!(ns > 0);
                    now += ns;
                }
                Step::Paused => unreachable!(),
            }
        }
        done
    }

    #[test]
    fn rate_limit_holds_the_budget() {
        for (mb, chunk) in [
            (1u32, 16u64 << 20),
            (10, 1 << 20),
            (50, 16 << 20),
            (100, 4096),
            (7, 3 << 20),
        ] {
            let rate = u64::from(mb) * BYTES_PER_MB;
            let done = simulate(mb, chunk, 20);
            // Twenty seconds of budget, plus the initial second of burst and one request in
            // debt; and no less than the budget minus one request.
            assert!(done <= 21 * rate + chunk, "{mb} MB/s {chunk}: {done}");
            assert!(done + chunk >= 20 * rate, "{mb} MB/s {chunk}: {done}");
        }
    }

    #[test]
    fn unlimited_pause_and_resume() {
        let mut c = Control::new(0);
        assert_eq!(c.step(0, u64::MAX), Step::Go);
        assert!(!c.apply(Message::Pause, 5));
        assert!(c.paused());
        assert_eq!(c.step(10, 4096), Step::Paused);
        // A rate change while paused does not wake the worker; resume does, once.
        assert!(!c.apply(Message::Rate(1), 20));
        assert_eq!(c.bytes_per_second(), 1_000_000);
        assert!(c.apply(Message::Resume, 30));
        assert!(!c.apply(Message::Resume, 40));
        assert_eq!(c.step(50, 2_000_000), Step::Go);
        // Two million bytes in debt at 1 MB/s: about a second to wait.
        match c.step(60, 4096) {
            Step::Wait(ns) => assert!((1_000_000_000..=1_000_002_000).contains(&ns), "{ns}"),
            s => panic!("{s:?}"),
        }
        assert!(c.apply(Message::Rate(0), 70));
        assert_eq!(c.step(80, u64::MAX), Step::Go);
    }

    #[test]
    fn idle_time_buys_one_second_of_burst() {
        let mut l = RateLimit::new(1, 0);
        // Idle for ten seconds, the clock read every half second.
        for half_seconds in 0..=20 {
            assert_eq!(l.admit(half_seconds * NSEC_PER_SEC / 2, 0), Ok(()));
        }
        let now = 10 * NSEC_PER_SEC;
        assert_eq!(l.admit(now, 1_500_000), Ok(()));
        assert!(l.admit(now, 1).is_err());
    }

    #[test]
    fn clock_edge_cases() {
        let mut l = RateLimit::new(1, 1000);
        // The clock going backwards is treated as no time passing.
        assert_eq!(l.admit(0, 1_000_000), Ok(()));
        assert!(l.admit(0, 1).is_err());
        // A long sleep refills one second only.
        assert_eq!(l.admit(u64::MAX, 1_000_000), Ok(()));
        assert!(l.admit(u64::MAX, 1).is_err());
        let mut l = RateLimit::new(u32::MAX, 0);
        assert_eq!(l.bytes_per_second(), MAX_RATE_MB * BYTES_PER_MB);
        assert_eq!(l.admit(1, u64::MAX), Ok(()));
        assert!(l.admit(2, 1).is_err());
    }
}
