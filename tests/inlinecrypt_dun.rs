// SPDX-License-Identifier: GPL-2.0

//! inlinecrypt-rs and crypt-rs must put the same bytes on disk: for every data unit, the DUN
//! blk-crypto gets from inlinecrypt's table (as its AES-256-XTS IV: the DUN's 64-bit limbs in
//! little-endian, zero padded to 16 bytes) equals the IV dm-crypt's `aes-xts-plain64` with
//! `iv_large_sectors` makes (crypt-rs's IV generator). The guest test compares the ciphertext of
//! the kernel's dm-crypt; this checks the arithmetic on the host, for sizes and offsets the guest
//! does not reach.

use dm_rust_pure::args::Args;
use dm_rust_pure::crypt::iv::{IvGen, IvMode, IvSector};
use dm_rust_pure::inlinecrypt_table::{parse, InlineEnv, Refused, MAX_KEY_SIZE};

struct Host;

impl InlineEnv for Host {
    fn logon_key(&mut self, _: &[u8], _: &mut [u8]) -> Result<(), Refused> {
        Err(Refused)
    }
    fn get_device(&mut self, _: &[u8]) -> Result<(), Refused> {
        Ok(())
    }
}

/// blk-crypto's IV for AES-256-XTS from a DUN (`blk_crypto_dun_to_iv`).
fn blk_crypto_iv(dun: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&dun.to_le_bytes());
    iv
}

#[test]
fn dun_is_plain64_with_iv_large_sectors() {
    let key = "ab".repeat(64);
    let gen = IvGen::new(IvMode::Plain64, 16, 16).unwrap();
    for ss in [512u32, 1024, 2048, 4096] {
        let units = u64::from(ss / 512);
        for iv_offset in [0u64, units, 7 * units, 1 << 40, u64::MAX - (1 << 20) - units + 1] {
            let iv_offset = iv_offset - iv_offset % units;
            let len = 1u64 << 20;
            let opts = if ss == 512 {
                String::new()
            } else {
                format!(" 2 sector_size:{ss} iv_large_sectors")
            };
            let line = format!("aes-xts-plain64 {key} {iv_offset} 7:0 0{opts}");
            let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            let mut k = [0u8; MAX_KEY_SIZE];
            let Ok(t) = parse(&mut Args::new(&words), len, &mut k, &mut Host) else {
                // Only where iv_offset + len overflows.
                assert!(iv_offset.checked_add(len).is_none(), "{line}");
                continue;
            };
            let c = t.config;
            let ivs = IvSector::new(iv_offset, ss, true);
            for rel in (0..len).step_by((len / 97) as usize).chain([len - units]) {
                let rel = rel - rel % units;
                let dun = c.dun(rel).unwrap_or_else(|| panic!("{line}: no DUN at {rel}"));
                let mut iv = [0u8; 16];
                gen.generate(ivs.of(rel), &mut iv).unwrap();
                assert_eq!(blk_crypto_iv(dun), iv, "{line}: sector {rel}");
                // Within what the key was set up for.
                assert!(dun <= c.max_dun);
                assert!(c.dun_bytes == 8 || dun >> (8 * c.dun_bytes) == 0);
            }
        }
    }
}
