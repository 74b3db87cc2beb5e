// SPDX-License-Identifier: GPL-2.0

//! `crypt-rs` (`crypt` with `upstream_names=1`): transparent encryption, compatible with the
//! kernel's dm-crypt 1.29 (table line, ciphertext on disk, table/status/IMA output, messages).
//!
//! Reads are remapped to the device and decrypted in place once it has read them
//! ([`Target::io_done`], in process context on the target's workqueue). Writes are taken over in
//! `map` and, on the workqueue ([`Target::bio_work`]), encrypted into clone bios with pages of the
//! target's own mempool, never in the submitter's pages, each submitted as soon as it is
//! encrypted; the original completes when the last clone has, with the first error. Empty flushes go to the device; discards too, with
//! `allow_discards`.
//!
//! Keys live in [`SecretBuf`]s, wiped when dropped (destruction and every error path) and by the
//! `key wipe` message; they are never logged.
//!
//! A key given as `:<bytes>:random` is made by the constructor from the kernel's random source,
//! for throw-away devices such as swap: it is never shown (the table says `:<bytes>:random`),
//! `key set` is refused, and a table with one is refused on a device that already has a live
//! table, since a reload would silently replace the key under the data.

// Targets are safe Rust: all unsafe code lives in the abstraction (`rust/dm/`).
#![deny(unsafe_code)]

pub mod iv;
pub mod table;

use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};

use kernel::ffi::c_int;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;

use crate::bindings;
use crate::dm::args::parse_hex_exact;
use crate::dm::bio::Op;
use crate::dm::saved_args::SavedArgs;
use crate::dm::clone::CloneError;
use crate::dm::device::QueueLimits;
use crate::dm::io::{DoneIo, TakenIo};
use crate::dm::keys::{read_user_type_key, UserKeyType};
use crate::dm::skcipher::{SecretBuf, Skcipher};
use crate::dm::work::{flags, MaxActive, WorkqueueConfig};
use crate::dm::{
    Args, Bio, CtrError, Device, DeviceVisitor, MapResult, MaySleep, StatusType, StatusWriter,
    Target, TargetCtx, Ti,
};
use iv::{IvGen, IvSector};
use table::{CipherInfo, CryptEnv, CryptTable, Key, KeyType, Message, MessageError, Refused, ShownKey};

/// Logs the way dm-crypt's messages read (`device-mapper: crypt: ...`).
macro_rules! crypt_log {
    ($m:ident, $($arg:tt)*) => {
        $m!("device-mapper: crypt: {}\n", format_args!($($arg)*))
    };
}

/// Longest IV handled (the crypto API's skciphers have at most 32 bytes).
const MAX_IV_SIZE: usize = 64;

/// Pages and clone bios kept in reserve (dm-crypt keeps `BIO_MAX_VECS` pages, 64 bios).
const POOL_PAGES: i32 = 256;
const POOL_BIOS: u32 = 64;

/// The workqueue where reads are decrypted and writes encrypted, as dm-crypt makes its
/// `kcryptd` queue: by default unbound, with as many work items at once as CPUs online, so that
/// the bios in flight are en/decrypted on all CPUs whichever CPU submitted or completed them;
/// with `same_cpu_crypt`, per-CPU and CPU-intensive, one work item at a time per CPU (the work
/// stays on the CPU that queued it: the submitter's for writes, the completion's for reads);
/// `high_priority` runs it at high priority.
const fn kcryptd(same_cpu: bool, high_priority: bool) -> WorkqueueConfig {
    let common = flags::MEM_RECLAIM | if high_priority { flags::HIGHPRI } else { 0 };
    if same_cpu {
        WorkqueueConfig {
            name: c"kcryptd-rs",
            flags: common | flags::CPU_INTENSIVE | flags::PERCPU,
            max_active: MaxActive::Limit(1),
        }
    } else {
        WorkqueueConfig {
            name: c"kcryptd-rs",
            flags: common | flags::UNBOUND,
            max_active: MaxActive::OnlineCpus,
        }
    }
}

/// A key in the kernel keyring, as the table names it.
struct KeyringRef {
    key_type: KeyType,
    description: KVec<u8>,
}

/// The key: its bytes (zero for a keyring key once loaded, as dm-crypt keeps no copy of those;
/// zero after `key wipe`), where it came from, and whether the cipher holds a valid key.
struct KeyState {
    bytes: SecretBuf,
    keyring: Option<KeyringRef>,
    valid: bool,
}

/// The kernel side of the constructor's parse (see `CryptEnv`).
struct Env<'c, 'a> {
    ctx: &'c mut TargetCtx<'a>,
    tfm: Option<Skcipher>,
    key: Option<KeyState>,
    dev: Option<Device>,
    /// A refusal more precise than dm-crypt's message for the step, for what is not implemented.
    why: Option<CtrError>,
}

/// Loads `key` (`size` bytes) into `tfm`: the new key state, or the reason it was refused.
/// A random key is generated here.
fn load_key(
    tfm: &Skcipher,
    key: &Key<'_>,
    size: u32,
    s: &MaySleep<'_>,
) -> Result<KeyState, Option<CtrError>> {
    let mut bytes = SecretBuf::new(size as usize).map_err(|_| None)?;
    let keyring = match *key {
        Key::Empty => None,
        Key::Random => {
            bytes.randomize_seeded(s).map_err(|e| {
                Some(CtrError::new(e, c"Interrupted waiting for the random source"))
            })?;
            tfm.set_key(bytes.as_slice()).map_err(|_| {
                Some(CtrError::new(
                    EINVAL,
                    c"Random key size not accepted by the cipher",
                ))
            })?;
            // No copy stays in the target: the cipher's key schedule is the only one.
            bytes.wipe();
            return Ok(KeyState {
                bytes,
                keyring: None,
                valid: true,
            });
        }
        Key::Hex(hex) => {
            parse_hex_exact(hex, bytes.as_mut_slice()).ok_or(None)?;
            None
        }
        Key::Keyring {
            key_type,
            description,
        } => {
            let kind = match key_type {
                KeyType::Logon => UserKeyType::Logon,
                KeyType::User => UserKeyType::User,
                KeyType::Encrypted => {
                    return Err(Some(CtrError::new(
                        EINVAL,
                        c"Keys of type encrypted are not supported",
                    )))
                }
                KeyType::Trusted => {
                    return Err(Some(CtrError::new(
                        EINVAL,
                        c"Keys of type trusted are not supported",
                    )))
                }
            };
            read_user_type_key(kind, description.as_bytes(), bytes.as_mut_slice())
                .map_err(|_| None)?;
            let mut d = KVec::new();
            d.extend_from_slice(description.as_bytes(), GFP_KERNEL)
                .map_err(|_| None)?;
            Some(KeyringRef {
                key_type,
                description: d,
            })
        }
    };
    tfm.set_key(bytes.as_slice()).map_err(|_| None)?;
    if keyring.is_some() {
        // As dm-crypt: no copy of a keyring key's payload stays in the target.
        bytes.wipe();
    }
    Ok(KeyState {
        bytes,
        keyring,
        valid: true,
    })
}

impl CryptEnv for Env<'_, '_> {
    fn alloc_cipher(&mut self, name: &str, count: u32) -> Result<CipherInfo, Refused> {
        if count != 1 {
            self.why = Some(CtrError::new(
                EINVAL,
                c"Several keys (<cipher>:<keycount>) are not supported",
            ));
            return Err(Refused);
        }
        let tfm = Skcipher::new(name, self.ctx.may_sleep()).map_err(|_| Refused)?;
        let info = CipherInfo {
            iv_size: tfm.iv_size(),
            block_size: tfm.block_size(),
        };
        self.tfm = Some(tfm);
        Ok(info)
    }

    fn set_key(&mut self, key: &Key<'_>, size: u32) -> Result<(), Refused> {
        let tfm = self.tfm.as_ref().ok_or(Refused)?;
        if matches!(key, Key::Random) && self.ctx.mapped_device_sectors() != 0 {
            // A live table (the device has a size): a reload with a new random key would make
            // everything written so far unreadable, under a user that goes on using the device.
            self.why = Some(CtrError::new(
                EINVAL,
                c"A random key needs a new device: this one has a live table",
            ));
            return Err(Refused);
        }
        match load_key(tfm, key, size, self.ctx.may_sleep()) {
            Ok(k) => {
                self.key = Some(k);
                Ok(())
            }
            Err(why) => {
                self.why = why;
                Err(Refused)
            }
        }
    }

    fn get_device(&mut self, path: &[u8]) -> Result<(), Refused> {
        self.dev = Some(self.ctx.get_device(path).map_err(|_| Refused)?);
        Ok(())
    }
}

/// The parse of a saved table line: the kernel's steps were done by the constructor.
struct Replay(CipherInfo);

impl CryptEnv for Replay {
    fn alloc_cipher(&mut self, _name: &str, _count: u32) -> Result<CipherInfo, Refused> {
        Ok(self.0)
    }
    fn set_key(&mut self, _key: &Key<'_>, _size: u32) -> Result<(), Refused> {
        Ok(())
    }
    fn get_device(&mut self, _path: &[u8]) -> Result<(), Refused> {
        Ok(())
    }
}

/// A crypt target.
pub(crate) struct Crypt {
    dev: Device,
    /// First sector of the mapping on `dev`.
    start: u64,
    len: u64,
    tfm: Skcipher,
    iv: Option<IvGen>,
    iv_sector: IvSector,
    sector_size: u32,
    key_size: u32,
    /// The key is `:<key_size>:random`: shown so, never set by a message.
    random_key: bool,
    key: Pin<KBox<Mutex<KeyState>>>,
    suspended: AtomicBool,
    saved: SavedArgs,
    cipher: CipherInfo,
}

fn nomem<E>(_: E) -> CtrError {
    CtrError::new(ENOMEM, c"Cannot allocate encryption context")
}

impl Crypt {
    /// The IV of the encryption sector `rel` 512-byte sectors into the target, into `buf`;
    /// returns the part to hand to the cipher (empty for modes without IV).
    fn iv<'b>(&self, rel: u64, buf: &'b mut [u8; MAX_IV_SIZE]) -> Result<&'b mut [u8]> {
        match &self.iv {
            None => Ok(&mut buf[..0]),
            Some(g) => {
                let iv = buf.get_mut(..g.iv_size()).ok_or(EINVAL)?;
                g.generate(self.iv_sector.of(rel), iv).map_err(|_| EINVAL)?;
                Ok(iv)
            }
        }
    }

    fn parse_saved<'a>(&self, slices: &'a [&'a [u8]], len: u64) -> Option<CryptTable<'a>> {
        CryptTable::parse(&Args::new(slices), len, &mut Replay(self.cipher)).ok()
    }
}

#[vtable]
impl Target for Crypt {
    const NAME: &'static CStr = c"crypt-rs";
    const UPSTREAM_NAME: Option<&'static CStr> = Some(c"crypt");
    const VERSION: [u32; 3] = [1, 29, 0];
    /// dm-crypt's default; the table chooses (`same_cpu_crypt`, `high_priority`) in `new`.
    const WORKQUEUE: Option<WorkqueueConfig> = Some(kcryptd(false, false));
    const AUDIT_PREFIX: Option<&'static CStr> = Some(c"crypt");

    fn new(ctx: &mut TargetCtx<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        let len = ctx.len();
        let mut env = Env {
            ctx,
            tfm: None,
            key: None,
            dev: None,
            why: None,
        };
        let parsed = CryptTable::parse(args, len, &mut env);
        let Env {
            tfm, key, dev, why, ..
        } = env;
        // On any error below, `key` (a `SecretBuf`) is wiped as it is dropped.
        let t = parsed.map_err(|e| why.unwrap_or(CtrError::from(e)))?;
        let (Some(tfm), Some(key), Some(dev)) = (tfm, key, dev) else {
            return Err(CtrError::new(EINVAL, c"Error allocating crypto tfm"));
        };
        if t.integrity().is_some() || t.integrity_key_size().is_some() {
            return Err(CtrError::new(
                EINVAL,
                c"integrity:<bytes>:<type> (authenticated encryption) is not supported",
            ));
        }
        let iv = match t.iv_mode() {
            None => None,
            Some(m) => {
                let info = t.cipher_info();
                let g = IvGen::new(m, info.iv_size as usize, info.block_size as usize)
                    .map_err(|_| CtrError::new(EINVAL, c"Error creating IV"))?;
                if g.iv_size() > MAX_IV_SIZE {
                    return Err(CtrError::new(EINVAL, c"Error creating IV"));
                }
                Some(g)
            }
        };
        // The key as the table prints it back: zeroes (not secret) or the keyring reference.
        let placeholder = match t.key() {
            Key::Empty => KVec::from_elem(b'-', 1, GFP_KERNEL).map_err(nomem)?,
            Key::Hex(h) => KVec::from_elem(b'0', h.len(), GFP_KERNEL).map_err(nomem)?,
            Key::Keyring { .. } | Key::Random => {
                let mut a = args.clone();
                let _ = a.next(c"");
                let k = a.next(c"").map_err(nomem)?;
                let mut v = KVec::new();
                v.extend_from_slice(k, GFP_KERNEL).map_err(nomem)?;
                v
            }
        };
        let saved = SavedArgs::with_replaced(args, Some((1, &placeholder))).map_err(nomem)?;
        // The pages and bios of the write clones, owned by the abstraction (they outlive
        // `bio_work`: the clones complete later).
        ctx.make_clone_pools(POOL_PAGES, POOL_BIOS)
            .map_err(|_| CtrError::new(ENOMEM, c"Cannot allocate page mempool"))?;
        let key_mutex = KBox::pin_init(new_mutex!(key), GFP_KERNEL).map_err(nomem)?;
        if t.allow_discards() {
            ctx.set_num_discard_bios(1);
        }
        ctx.set_num_flush_bios(1);
        ctx.set_workqueue(kcryptd(t.same_cpu_crypt(), t.high_priority()));
        // As dm-crypt: each write needs pages of the pool.
        ctx.set_limit_swap_bios(true);
        KBox::pin(
            Self {
                dev,
                start: t.start(),
                len,
                iv,
                iv_sector: IvSector::new(t.iv_offset(), t.sector_size(), t.iv_large_sectors()),
                sector_size: t.sector_size(),
                key_size: t.key_size(),
                random_key: matches!(t.key(), Key::Random),
                cipher: t.cipher_info(),
                tfm,
                key: key_mutex,
                suspended: AtomicBool::new(false),
                saved,
            },
            GFP_KERNEL,
        )
        .map_err(nomem)
    }

    fn map(&self, ti: &Ti<Self>, bio: &mut Bio) -> MapResult {
        // An empty flush only needs to reach the device.
        let Some(rel) = bio.target_sector(ti) else {
            bio.set_dev(&self.dev);
            return MapResult::Remapped;
        };
        let Some(sector) = self.start.checked_add(rel) else {
            return MapResult::Kill;
        };
        match bio.op() {
            // Only with allow_discards (`num_discard_bios`).
            Op::Discard => {
                bio.remap(&self.dev, sector);
                MapResult::Remapped
            }
            Op::Read | Op::Write => {
                // Whole encryption sectors only (the queue limits say so; a bio that is not is
                // refused, as by dm-crypt).
                let per = u64::from(self.sector_size >> 9);
                if rel & (per - 1) != 0 || bio.size() & (self.sector_size - 1) != 0 {
                    return MapResult::Kill;
                }
                if bio.op() == Op::Read {
                    bio.remap(&self.dev, sector);
                    MapResult::RemappedCompleteInWork
                } else {
                    MapResult::CompleteInWork
                }
            }
            _ => MapResult::Kill,
        }
    }

    fn io_done(&self, _ti: &Ti<Self>, io: &mut DoneIo<'_>, s: &MaySleep<'_>) -> u8 {
        let lower = io.lower_status();
        if lower != bindings::DM_RUST_BLK_STS_OK {
            return lower;
        }
        let Some(rel) = io.sector().checked_sub(self.start) else {
            return bindings::DM_RUST_BLK_STS_IOERR;
        };
        let step = self.iv_sector.step();
        let mut req = self.tfm.request(s);
        let mut buf = [0u8; MAX_IV_SIZE];
        let r = io.for_each_block(self.sector_size, |i, block| {
            let iv = self.iv(rel.wrapping_add(u64::from(i).wrapping_mul(step)), &mut buf)?;
            req.decrypt_in_place(block, iv, s)
        });
        match r {
            Ok(()) => bindings::DM_RUST_BLK_STS_OK,
            Err(_) => bindings::DM_RUST_BLK_STS_IOERR,
        }
    }

    fn bio_work(&self, ti: &Ti<Self>, io: &mut TakenIo<'_>, s: &MaySleep<'_>) -> u8 {
        let Some(rel) = io.sector().checked_sub(ti.begin()) else {
            return bindings::DM_RUST_BLK_STS_IOERR;
        };
        let step = self.iv_sector.step();
        let mut req = self.tfm.request(s);
        let mut buf = [0u8; MAX_IV_SIZE];
        let r = io.write_clone(
            &self.dev,
            self.start.wrapping_add(rel),
            self.sector_size,
            s,
            |i, src, dst| {
                let iv = self.iv(rel.wrapping_add(u64::from(i).wrapping_mul(step)), &mut buf)?;
                req.encrypt(src, dst, iv, s)
            },
        );
        match r {
            Ok(()) => bindings::DM_RUST_BLK_STS_OK,
            Err(CloneError::Io(status)) => status,
            Err(_) => bindings::DM_RUST_BLK_STS_IOERR,
        }
    }

    fn postsuspend(&self, _ti: &Ti<Self>, _s: &MaySleep<'_>) {
        self.suspended.store(true, Ordering::Release);
    }

    fn preresume(&self, _ti: &Ti<Self>, _s: &MaySleep<'_>) -> Result {
        if !self.key.lock().valid {
            crypt_log!(pr_err, "aborting resume - crypt key is not set.");
            return Err(EAGAIN);
        }
        Ok(())
    }

    fn resume(&self, _ti: &Ti<Self>, _s: &MaySleep<'_>) {
        self.suspended.store(false, Ordering::Release);
    }

    fn message(
        &self,
        _ti: &Ti<Self>,
        args: &mut Args<'_>,
        _out: &mut StatusWriter<'_>,
        s: &MaySleep<'_>,
    ) -> Result {
        // At most 4 words matter: more is unrecognised anyway.
        let mut words: [&[u8]; 4] = [&[]; 4];
        let mut n = 0;
        while n < words.len() {
            match args.next(c"") {
                Ok(w) => {
                    words[n] = w;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        let suspended = self.suspended.load(Ordering::Acquire);
        match Message::parse(&words[..n], suspended, self.key_size, self.random_key) {
            Err(MessageError::Unrecognised) => {
                crypt_log!(pr_warn, "unrecognised message received.");
                Err(EINVAL)
            }
            Err(MessageError::NotSuspended) => {
                crypt_log!(pr_warn, "not suspended during key manipulation.");
                Err(EINVAL)
            }
            Err(MessageError::BadKey) => Err(EINVAL),
            Err(MessageError::RandomKey) => {
                crypt_log!(pr_warn, "key set refused: the key is random, made in the kernel.");
                Err(EINVAL)
            }
            Ok(Message::KeySet(key)) => {
                let mut state = self.key.lock();
                match load_key(&self.tfm, &key, self.key_size, s) {
                    Ok(new) => {
                        // The old key is wiped as it is dropped.
                        *state = new;
                        Ok(())
                    }
                    Err(_) => {
                        if !matches!(key, Key::Keyring { .. }) {
                            state.valid = false;
                        }
                        Err(EINVAL)
                    }
                }
            }
            Ok(Message::KeyWipe) => {
                let mut state = self.key.lock();
                state.valid = false;
                state.keyring = None;
                // The cipher gets a random key, so that its key schedule no longer holds the key.
                state.bytes.randomize();
                let r = self.tfm.set_key(state.bytes.as_slice());
                state.bytes.wipe();
                r
            }
        }
    }

    fn status(&self, ti: &Ti<Self>, kind: StatusType, out: &mut StatusWriter<'_>) {
        let Ok(slices) = self.saved.slices() else {
            return;
        };
        let Some(t) = self.parse_saved(&slices, ti.len()) else {
            return;
        };
        let _ = match kind {
            StatusType::Info => t.write_info(out),
            StatusType::Table => {
                let state = self.key.lock();
                let shown = match &state.keyring {
                    _ if self.random_key => ShownKey::Random {
                        size: self.key_size,
                    },
                    Some(k) => ShownKey::Keyring {
                        size: self.key_size,
                        key_type: k.key_type,
                        description: core::str::from_utf8(&k.description).unwrap_or(""),
                    },
                    None => ShownKey::Bytes(state.bytes.as_slice()),
                };
                t.write_table(out, self.dev.name(), shown)
            }
            StatusType::Ima => ti
                .write_ima_name_version(out)
                .and_then(|()| t.write_ima(out)),
        };
    }

    fn iterate_devices(&self, visit: &mut DeviceVisitor<'_>) -> c_int {
        visit.visit(&self.dev, self.start, self.len)
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        limits.set_max_segment_size(bindings::DM_RUST_PAGE_SIZE as u32);
        limits.set_block_size(self.sector_size);
    }
}

crate::declare_target!(Crypt, crypt);
