// SPDX-License-Identifier: GPL-2.0

//! `inlinecrypt-rs` (`inlinecrypt` with upstream names): encrypts a range of one device with
//! blk-crypto, like the kernel's dm-inlinecrypt, which Debian's kernel does not build.
//!
//! Table line (see [`table`]):
//! `aes-xts-plain64 <key> <iv_offset> <dev> <offset> [<#opt> keytype:raw|keytype:hw-wrapped
//! allow_discards sector_size:<n> iv_large_sectors]`.
//!
//! The target never touches data: the constructor starts a blk-crypto key on the device, and
//! `map` gives each bio an encryption context (data unit = `sector_size`, DUN =
//! `(iv_offset + sector) / (sector_size / 512)`), which the device below en/decrypts: inline
//! encryption hardware where it has some, blk-crypto's software fallback otherwise. The
//! ciphertext is that of dm-crypt's `aes-xts-plain64` with `iv_large_sectors` (the DUN is
//! plain64's IV).

// Targets are safe Rust: all unsafe code lives in the abstraction (`rust/dm/`).
#![deny(unsafe_code)]

pub mod table;

use core::pin::Pin;

use kernel::ffi::c_int;
use kernel::prelude::*;

use crate::dm::bio::Op;
use crate::dm::blk_crypto::{self, Encrypt, KeyBuf, KeyConfig, KeyError, KeyId};
use crate::dm::device::QueueLimits;
use crate::dm::keys::UserKeyType;
use crate::dm::{
    Args, Bio, CtrError, Device, DeviceVisitor, MapResult, StatusType, StatusWriter, Target,
    TargetCtx, Ti,
};
use table::{Config, InlineEnv, KeySource, Refused};

const _: () = assert!(blk_crypto::MAX_KEY_SIZE == table::MAX_KEY_SIZE);

/// An inline-encrypted mapping.
pub(crate) struct InlineCrypt {
    dev: Device,
    config: Config,
    /// The blk-crypto key, owned by the adapter (evicted and wiped after this state is dropped).
    key: KeyId,
    /// A keyring key's description, for the table line (`None`: the key was given in hex).
    key_description: Option<KVec<u8>>,
    len: u64,
}

/// The constructor's kernel side for the table parser.
struct Env<'c, 'a> {
    ctx: &'c mut TargetCtx<'a>,
    dev: Option<Device>,
    /// The errors behind a refusal, returned to device-mapper as dm-inlinecrypt does.
    dev_error: Option<CtrError>,
    key_error: Option<Error>,
}

impl InlineEnv for Env<'_, '_> {
    fn logon_key(&mut self, description: &[u8], out: &mut [u8]) -> Result<(), Refused> {
        crate::dm::keys::read_user_type_key(UserKeyType::Logon, description, out).map_err(|e| {
            self.key_error = Some(e);
            Refused
        })
    }

    fn get_device(&mut self, path: &[u8]) -> Result<(), Refused> {
        match self.ctx.get_device(path) {
            Ok(d) => {
                self.dev = Some(d);
                Ok(())
            }
            Err(e) => {
                self.dev_error = Some(e);
                Err(Refused)
            }
        }
    }
}

#[vtable]
impl Target for InlineCrypt {
    const NAME: &'static CStr = c"inlinecrypt-rs";
    const UPSTREAM_NAME: Option<&'static CStr> = Some(c"inlinecrypt");
    const VERSION: [u32; 3] = [1, 0, 0];
    // Not DM_TARGET_PASSES_CRYPTO: the target uses the device's inline encryption itself. Not
    // DM_TARGET_NOWAIT: `map` may wait for memory (`Encrypt`).
    const FEATURES: u64 = 0;

    fn new(ti: &mut TargetCtx<'_>, args: &mut Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        let len = ti.len();
        // Wiped when dropped, on every path.
        let mut raw = KeyBuf::new();
        let mut env = Env {
            ctx: ti,
            dev: None,
            dev_error: None,
            key_error: None,
        };
        let parsed = table::parse(args, len, raw.bytes_mut(), &mut env);
        let (dev, dev_error, key_error) = (env.dev.take(), env.dev_error, env.key_error);
        let t = parsed.map_err(|e| match (dev_error, key_error) {
            (Some(de), _) if e.0 == de.msg => de,
            (_, Some(ke)) if e.0 == c"Malformed key string" => CtrError::new(ke, e.0),
            _ => CtrError::from(e),
        })?;
        let dev = dev.ok_or(CtrError::new(EINVAL, c"Device lookup failed"))?;
        let c = t.config;
        let key_description = match t.key {
            KeySource::Hex => None,
            KeySource::Logon { description } => {
                let mut d = KVec::with_capacity(description.len(), GFP_KERNEL)
                    .map_err(|_| CtrError::new(ENOMEM, c"Out of memory"))?;
                d.extend_from_slice(description, GFP_KERNEL)
                    .map_err(|_| CtrError::new(ENOMEM, c"Out of memory"))?;
                Some(d)
            }
        };
        let cfg = KeyConfig {
            mode: match c.cipher {
                table::Cipher::AesXtsPlain64 => blk_crypto::Mode::Aes256Xts,
            },
            key_type: match c.key_type {
                table::KeyType::Raw => blk_crypto::KeyType::Raw,
                table::KeyType::HwWrapped => blk_crypto::KeyType::HwWrapped,
            },
            data_unit_size: c.sector_size,
            dun_bytes: c.dun_bytes,
        };
        let key = ti
            .start_blk_crypto_key(&dev, &raw.bytes_mut()[..c.key_size as usize], cfg)
            .map_err(|e| match e {
                KeyError::Init(e) => CtrError::new(e, c"Error initializing blk-crypto key"),
                KeyError::Start(e) => CtrError::new(e, c"Error starting to use blk-crypto"),
                KeyError::NoMemory => CtrError::new(ENOMEM, c"Out of memory"),
            })?;
        drop(raw);
        ti.set_num_flush_bios(1);
        if c.allow_discards {
            ti.set_num_discard_bios(1);
        }
        KBox::pin(
            Self {
                dev,
                config: c,
                key,
                key_description,
                len,
            },
            GFP_KERNEL,
        )
        .map_err(|_| CtrError::new(ENOMEM, c"Out of memory"))
    }

    fn map(&self, ti: &Ti<Self>, bio: &mut Bio) -> MapResult {
        // An empty flush: it only needs to reach the device.
        let Some(rel) = bio.target_sector(ti) else {
            bio.set_dev(&self.dev);
            return MapResult::Remapped;
        };
        // Within the target (`rel < len`); dm core checked that the area fits the device.
        let Some(sector) = self.config.start.checked_add(rel) else {
            return MapResult::Kill;
        };
        match bio.op() {
            Op::Read | Op::Write => {}
            // No data to encrypt (only with allow_discards).
            Op::Discard => {
                bio.remap(&self.dev, sector);
                return MapResult::Remapped;
            }
            // Nothing else is asked for (no write-zeroes or secure-erase bios: they would write
            // plaintext); refuse rather than pass anything through unencrypted.
            _ => return MapResult::Kill,
        }
        // A bio must start on a data unit (the logical block size is the data unit).
        let Some(dun) = self.config.dun(rel) else {
            return MapResult::Kill;
        };
        MapResult::Encrypt(Encrypt::new(ti, self.key, sector, dun))
    }

    fn status(&self, ti: &Ti<Self>, kind: StatusType, out: &mut StatusWriter<'_>) {
        if kind != StatusType::Table {
            // dm-inlinecrypt reports nothing else (no status, an empty IMA record).
            return;
        }
        let _ = self.config.write_table(
            out,
            |o| match &self.key_description {
                Some(d) => table::write_keyring_key(o, self.config.key_size, d),
                None => ti
                    .with_blk_crypto_key(self.key, |bytes| table::write_hex(o, bytes))
                    .unwrap_or(Ok(())),
            },
            self.dev.name(),
        );
    }

    fn iterate_devices(&self, visit: &mut DeviceVisitor<'_>) -> c_int {
        visit.visit(&self.dev, self.config.start, self.len)
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        // Every I/O is made of whole data units.
        limits.set_block_size(self.config.sector_size);
    }
}

crate::declare_target!(InlineCrypt, inlinecrypt);
