// SPDX-License-Identifier: GPL-2.0

//! dm_rust_test_inline: test infrastructure for dm-rust, not shipped. Two RAM disks,
//! `ramcrypt0` and `ramcrypt1`, on `kernel::block::mq` (in the manner of the kernel's rnull),
//! that have an inline encryption capability: a blk-crypto profile with a few keyslots,
//! AES-256-XTS, data units of 512 and 4096 bytes, DUNs of 8 bytes. A request that carries an
//! encryption context is encrypted (written) or decrypted (read) here, in software, with the key
//! blk-crypto programmed into its keyslot and the DUN as the XTS tweak in little-endian, as
//! blk-crypto's software fallback does; so the bytes stored are the fallback's ciphertext.
//! The module parameters `units_encrypted`, `units_decrypted`, `keyslots_programmed` and
//! `keyslots_evicted` count what the disks did, so a test can tell which layer encrypted: when
//! blk-crypto's fallback encrypts (a device without the capability in the stack), the requests
//! reaching the disk carry no context and the counters stay still.
//! `no_profile=1` registers no profile (disks without the capability).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::block::mq::{self, Operations, TagSet};
use kernel::prelude::*;
use kernel::sync::{aref::ARef, Arc, ArcBorrow, SpinLock};
use kernel::{c_str, new_spinlock};

mod bindings;
pub mod blk;

use blk::{CryptoProfile, DmaBuf, Op, Skcipher};

module! {
    type: TestInline,
    name: "dm_rust_test_inline",
    authors: ["dm-rust developers"],
    description: "dm-rust tests: RAM disks with inline encryption done in software",
    license: "GPL",
}

const DISKS: i32 = 2;
const CAPACITY_SECTORS: u64 = (64 << 20) >> 9;
const KEYSLOTS: u32 = 4;
/// The largest data unit the profile announces.
const MAX_DATA_UNIT: usize = 4096;

/// The counters, indexed as `glue.c`'s module parameters.
static COUNTERS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
const UNITS_ENCRYPTED: usize = 0;
const UNITS_DECRYPTED: usize = 1;
const KEYSLOTS_PROGRAMMED: usize = 2;
const KEYSLOTS_EVICTED: usize = 3;

fn count(which: usize, n: u64) {
    COUNTERS[which].fetch_add(n, Ordering::Relaxed);
}

/// Read by `glue.c` for the counter parameters.
#[no_mangle]
extern "C" fn dmrti_counter(which: kernel::ffi::c_uint) -> u64 {
    COUNTERS
        .get(which as usize)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

/// A keyslot: a transform whose key is the slot's.
struct Slot {
    tfm: Skcipher,
    programmed: bool,
}

/// What a request works on, under one lock: the disk's bytes, a data unit's buffer, the slots.
struct State {
    data: VVec<u8>,
    unit: DmaBuf,
    slots: KVec<Slot>,
}

/// One disk's queue data.
#[pin_data]
struct RamCrypt {
    #[pin]
    profile: CryptoProfile,
    with_profile: bool,
    #[pin]
    state: SpinLock<State>,
}

blk::keyslot_ops!(RamCrypt, profile);

impl blk::HasProfile for RamCrypt {
    fn profile(&self) -> Option<&CryptoProfile> {
        self.with_profile.then_some(&self.profile)
    }
}

impl blk::Keyslots for RamCrypt {
    fn program(&self, key: &[u8], mode: bindings::blk_crypto_mode_num, slot: u32) -> Result {
        if mode != bindings::blk_crypto_mode_num_BLK_ENCRYPTION_MODE_AES_256_XTS {
            return Err(EOPNOTSUPP);
        }
        let mut st = self.state.lock();
        let s = st.slots.get_mut(slot as usize).ok_or(EINVAL)?;
        s.programmed = false;
        s.tfm.set_key(key)?;
        s.programmed = true;
        count(KEYSLOTS_PROGRAMMED, 1);
        Ok(())
    }

    fn evict(&self, slot: u32) -> Result {
        let mut st = self.state.lock();
        let s = st.slots.get_mut(slot as usize).ok_or(EINVAL)?;
        s.programmed = false;
        // Overwrite the key, as blk-crypto's fallback does (a key of zeroes).
        s.tfm.set_key(&[0u8; 64])?;
        count(KEYSLOTS_EVICTED, 1);
        Ok(())
    }
}

impl RamCrypt {
    fn new() -> Result<impl PinInit<Self, Error>> {
        let mut slots = KVec::with_capacity(KEYSLOTS as usize, GFP_KERNEL)?;
        for _ in 0..KEYSLOTS {
            slots.push(
                Slot {
                    tfm: Skcipher::new(c_str!("xts(aes)"))?,
                    programmed: false,
                },
                GFP_KERNEL,
            )?;
        }
        let state = State {
            data: VVec::from_elem(0u8, (CAPACITY_SECTORS << 9) as usize, GFP_KERNEL)?,
            unit: DmaBuf::new(MAX_DATA_UNIT)?,
            slots,
        };
        Ok(try_pin_init!(Self {
            profile <- CryptoProfile::new(KEYSLOTS),
            with_profile: !blk::param_no_profile(),
            state <- new_spinlock!(state, "ramcrypt"),
        }))
    }

    /// Copies a read or write request between its pages and the disk, decrypting or encrypting
    /// each data unit when it carries an encryption context.
    fn transfer(&self, rq: &blk::Rq<'_>, write: bool) -> Result {
        let len = rq.bytes();
        let start = usize::try_from(rq.pos())
            .ok()
            .and_then(|s| s.checked_mul(512))
            .ok_or(EIO)?;
        let crypt = rq.crypt();
        let mut guard = self.state.lock();
        let State { data, unit, slots } = &mut *guard;
        let end = start.checked_add(len).ok_or(EIO)?;
        if end > data.len() {
            return Err(EIO);
        }
        let Some(c) = crypt else {
            let mut pos = start;
            rq.for_each_segment(|seg| {
                let d = data.get_mut(pos..pos + seg.len()).ok_or(EIO)?;
                if write {
                    seg.copy_to(0, d)?;
                } else {
                    seg.copy_from(0, d)?;
                }
                pos += seg.len();
                Ok(())
            })?;
            return if pos == end { Ok(()) } else { Err(EIO) };
        };
        let du = c.data_unit_size as usize;
        if !(du == 512 || du == MAX_DATA_UNIT) || len % du != 0 || start % du != 0 {
            return Err(EIO);
        }
        let slot = slots.get_mut(c.slot as usize).ok_or(EIO)?;
        if !slot.programmed {
            return Err(EIO);
        }
        // `pos`: bytes of the request done. A data unit may span segments: it is gathered in
        // (write) or served from (read) `unit`.
        let mut pos = 0usize;
        rq.for_each_segment(|seg| {
            let mut at = 0;
            while at < seg.len() {
                let in_unit = pos % du;
                let n = (seg.len() - at).min(du - in_unit);
                let unit_start = start + pos - in_unit;
                let mut iv = [0u8; 16];
                let dun = c.dun.checked_add((pos / du) as u64).ok_or(EIO)?;
                iv[..8].copy_from_slice(&dun.to_le_bytes());
                if pos + n > len {
                    return Err(EIO);
                }
                if write {
                    seg.copy_to(at, &mut unit.as_mut_slice()[in_unit..in_unit + n])?;
                    if in_unit + n == du {
                        slot.tfm.crypt_in_place(true, unit, du, &mut iv)?;
                        data.get_mut(unit_start..unit_start + du)
                            .ok_or(EIO)?
                            .copy_from_slice(&unit.as_slice()[..du]);
                        count(UNITS_ENCRYPTED, 1);
                    }
                } else {
                    if in_unit == 0 {
                        unit.as_mut_slice()[..du]
                            .copy_from_slice(data.get(unit_start..unit_start + du).ok_or(EIO)?);
                        slot.tfm.crypt_in_place(false, unit, du, &mut iv)?;
                        count(UNITS_DECRYPTED, 1);
                    }
                    seg.copy_from(at, &unit.as_slice()[in_unit..in_unit + n])?;
                }
                at += n;
                pos += n;
            }
            Ok(())
        })?;
        if pos == len {
            Ok(())
        } else {
            Err(EIO)
        }
    }
}

struct Driver;

#[vtable]
impl Operations for Driver {
    type QueueData = Arc<RamCrypt>;

    fn queue_rq(disk: ArcBorrow<'_, RamCrypt>, rq: ARef<mq::Request<Self>>, _is_last: bool) -> Result {
        let r = blk::Rq::new(&rq);
        match r.op() {
            Op::Read => disk.transfer(&r, false)?,
            Op::Write => disk.transfer(&r, true)?,
            // The data is in memory as soon as written.
            Op::Flush => (),
            Op::Other => return Err(EOPNOTSUPP),
        }
        // A failed request is ended by blk-mq with the error returned above. Here the
        // reference is unique (as in rnull), so ending cannot fail.
        mq::Request::end_ok(rq).map_err(|_| EIO)
    }

    fn commit_rqs(_disk: ArcBorrow<'_, RamCrypt>) {}

    fn complete(rq: ARef<mq::Request<Self>>) {
        let _ = mq::Request::end_ok(rq);
    }
}

struct TestInline {
    _disks: KVec<blk::Disk<Driver, RamCrypt>>,
}

impl kernel::Module for TestInline {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let mut disks = KVec::with_capacity(DISKS as usize, GFP_KERNEL)?;
        for i in 0..DISKS {
            let tagset = Arc::pin_init(TagSet::new(1, 64, 1), GFP_KERNEL)?;
            let queue_data = Arc::pin_init(RamCrypt::new()?, GFP_KERNEL)?;
            disks.push(blk::Disk::new(tagset, queue_data, i, CAPACITY_SECTORS)?, GFP_KERNEL)?;
        }
        pr_info!(
            "{} RAM disks ramcrypt0..{} of {} MiB, inline encryption {}\n",
            DISKS,
            DISKS - 1,
            CAPACITY_SECTORS >> 11,
            if blk::param_no_profile() { "off (no_profile)" } else { "on" }
        );
        Ok(Self { _disks: disks })
    }
}
