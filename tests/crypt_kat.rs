// SPDX-License-Identifier: GPL-2.0

//! Known answers for the IV mapping: sectors encrypted with our table parser and IV generators
//! (and RustCrypto's AES-XTS and AES-CBC) must equal the ciphertext OpenSSL gives for the IVs
//! dm-crypt documents, computed on its own by `tests/crypt_reference.py` (the `openssl` command
//! for CBC and ESSIV, python3-cryptography's OpenSSL XTS for XTS).
//!
//! Covered: plain64, plain, plain64be and essiv:sha256; sector sizes 512 and 4096, with and
//! without `iv_large_sectors`; zero and non-zero `iv_offset`; runs starting inside the target.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use aes::cipher::{BlockEncrypt as _, BlockEncryptMut as _, KeyInit as _, KeyIvInit as _};
use dm_rust_pure::args::Args;
use dm_rust_pure::crypt::iv::{essiv_iv, BlockEncrypt, Digest, IvError, IvGen, IvMode, IvSector};
use dm_rust_pure::crypt::table::{CipherInfo, CryptEnv, CryptTable, Key, Refused};

/// The kernel side for the ciphers used here; keeps the key.
#[derive(Default)]
struct Host {
    key: Vec<u8>,
}

impl CryptEnv for Host {
    fn alloc_cipher(&mut self, name: &str, _count: u32) -> Result<CipherInfo, Refused> {
        match name {
            "xts(aes)" | "cbc(aes)" | "essiv(cbc(aes),sha256)" => Ok(CipherInfo {
                iv_size: 16,
                block_size: 16,
            }),
            _ => Err(Refused),
        }
    }
    fn set_key(&mut self, key: &Key<'_>, _size: u32) -> Result<(), Refused> {
        let Key::Hex(hex) = key else {
            return Err(Refused);
        };
        self.key = hex
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect();
        Ok(())
    }
    fn get_device(&mut self, _path: &[u8]) -> Result<(), Refused> {
        Ok(())
    }
}

struct Sha256;

impl Digest for Sha256 {
    fn size(&self) -> usize {
        32
    }
    fn digest(&mut self, data: &[u8], out: &mut [u8]) -> Result<(), IvError> {
        out.copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(data));
        Ok(())
    }
}

#[derive(Default)]
struct Aes(Option<aes::Aes256>);

impl BlockEncrypt for Aes {
    fn block_size(&self) -> usize {
        16
    }
    fn set_key(&mut self, key: &[u8]) -> Result<(), IvError> {
        self.0 = Some(aes::Aes256::new_from_slice(key).map_err(|_| IvError::IvTooShort)?);
        Ok(())
    }
    fn encrypt_block(&mut self, block: &mut [u8]) -> Result<(), IvError> {
        let aes = self.0.as_ref().ok_or(IvError::IvTooShort)?;
        aes.encrypt_block(block.into());
        Ok(())
    }
}

/// Encrypts `data`, which starts `first` sectors into the target, as the table `line` says.
fn ours(line: &str, first: u64, data: &[u8]) -> Vec<u8> {
    let argv: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
    let mut host = Host::default();
    let t = CryptTable::parse(&Args::new(&argv), 1 << 20, &mut host).expect(line);
    let key = host.key;
    let info = t.cipher_info();
    let gen = IvGen::new(
        t.iv_mode().unwrap(),
        info.iv_size as usize,
        info.block_size as usize,
    )
    .unwrap();
    let sectors = IvSector::new(t.iv_offset(), t.sector_size(), t.iv_large_sectors());
    let size = t.sector_size() as usize;
    let mut out = data.to_vec();
    for (i, unit) in out.chunks_mut(size).enumerate() {
        let sector = sectors.of(first + i as u64 * sectors.step());
        let mut iv = vec![0; gen.iv_size()];
        gen.generate(sector, &mut iv).unwrap();
        match t.cipher_api() {
            "xts(aes)" => {
                let (k1, k2) = key.split_at(key.len() / 2);
                let xts = xts_mode::Xts128::new(
                    aes::Aes256::new_from_slice(k1).unwrap(),
                    aes::Aes256::new_from_slice(k2).unwrap(),
                );
                xts.encrypt_sector(unit, iv.try_into().unwrap());
            }
            api => {
                if api.starts_with("essiv(") {
                    // What the crypto API's essiv template does with the plain64 IV it is given.
                    assert_eq!(gen.mode(), IvMode::Essiv);
                    let sector = u64::from_le_bytes(iv[..8].try_into().unwrap());
                    essiv_iv(&mut Sha256, &mut Aes::default(), &key, sector, &mut iv).unwrap();
                }
                let len = unit.len();
                cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &iv)
                    .unwrap()
                    .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(unit, len)
                    .unwrap();
            }
        }
    }
    out
}

/// A Python that has python3-cryptography: the one on the PATH, or Debian's.
fn python() -> &'static str {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| {
            Command::new(py)
                .args(["-c", "import cryptography"])
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("python3 with python3-cryptography must be installed")
}

/// What OpenSSL gives for the same sectors.
fn reference(
    spec: &str,
    key: &str,
    iv_offset: u64,
    sector_size: u32,
    large: bool,
    first: u64,
    data: &[u8],
) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crypt_reference.py");
    let mut child = Command::new(python())
        .arg(script)
        .args([spec, key, &iv_offset.to_string(), &sector_size.to_string()])
        .args([if large { "1" } else { "0" }, &first.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reference failed for {spec}");
    out.stdout
}

/// Plaintext that differs in every 16-byte block.
fn plaintext(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 + i / 512 * 13 + i / 4096) as u8)
        .collect()
}

const KEY: &str = "1f2e3d4c5b6a79880716253443526170\
                   8f9eadbccbdae9f80112233445566778\
                   99aabbccddeeff00fedcba9876543210\
                   0123456789abcdeffedcba9876543210";

fn check(
    spec: &str,
    key: &str,
    iv_offset: u64,
    sector_size: u32,
    large: bool,
    first: u64,
    sectors: usize,
) {
    let mut opts = Vec::new();
    if sector_size != 512 {
        opts.push(format!("sector_size:{sector_size}"));
    }
    if large {
        opts.push("iv_large_sectors".to_string());
    }
    let mut line = format!("{spec} {key} {iv_offset} /dev/vdb 0");
    if !opts.is_empty() {
        line += &format!(" {} {}", opts.len(), opts.join(" "));
    }
    let data = plaintext(sectors * sector_size as usize);
    let got = ours(&line, first, &data);
    let want = reference(
        spec.trim_start_matches("aes-"),
        key,
        iv_offset,
        sector_size,
        large,
        first,
        &data,
    );
    assert_eq!(want.len(), data.len(), "{line}");
    assert_ne!(got, data, "{line}");
    for (i, (g, w)) in got
        .chunks(sector_size as usize)
        .zip(want.chunks(sector_size as usize))
        .enumerate()
    {
        assert!(
            g == w,
            "{line}: sector {i} (from target sector {first}) differs from OpenSSL's"
        );
    }
}

#[test]
fn xts_plain64() {
    for (iv_offset, size, large, first) in [
        (0, 512, false, 0),
        (12345, 512, false, 7),
        (0, 512, true, 3),
        (0, 4096, false, 0),
        (0, 4096, true, 0),
        (16, 4096, false, 8),
        (16, 4096, true, 24),
        (4096, 4096, true, 1 << 20),
    ] {
        check("aes-xts-plain64", KEY, iv_offset, size, large, first, 6);
    }
}

#[test]
fn xts_plain_and_plain64be() {
    // plain keeps only 32 bits of the sector number: start just below 2^32.
    let near = (1u64 << 32) - 2;
    check("aes-xts-plain", KEY, near, 512, false, 0, 5);
    check("aes-xts-plain", KEY, near - 6, 4096, false, 0, 3);
    check("aes-xts-plain64", KEY, near, 512, false, 0, 5);
    check("aes-xts-plain64be", KEY, 8, 4096, true, 16, 3);
}

#[test]
fn cbc() {
    let k32 = &KEY[..64];
    check("aes-cbc-plain64", k32, 0, 512, false, 0, 4);
    check("aes-cbc-plain64", k32, 104, 4096, true, 8, 3);
    check("aes-cbc-essiv:sha256", k32, 0, 512, false, 0, 4);
    check("aes-cbc-essiv:sha256", k32, 64, 4096, false, 16, 3);
    check("aes-cbc-essiv:sha256", k32, 64, 4096, true, 16, 3);
}
