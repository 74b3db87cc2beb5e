// SPDX-License-Identifier: GPL-2.0

//! dm-crypt's IV generators: the initial vector handed to the cipher for each encryption sector.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`.
//!
//! dm-crypt numbers encryption sectors from the start of the target, in 512-byte units, plus the
//! table's `iv_offset`. With `sector_size:<n>` above 512, each encryption sector still carries
//! the number of its first 512-byte sector, unless `iv_large_sectors` asks for the number to be
//! counted in `<n>`-byte units instead ([`IvSector`]). The IV mode then turns that number into
//! the IV ([`IvGen`]):
//!
//! | mode | IV |
//! | --- | --- |
//! | `plain` | low 32 bits of the number, little-endian, zero padded |
//! | `plain64` | the number, 64-bit little-endian, zero padded |
//! | `plain64be` | the number, 64-bit big-endian, in the last 8 bytes |
//! | `essiv:<hash>` | as `plain64`; the crypto API's `essiv(<mode>(<cipher>),<hash>)` template encrypts it with the hash of the key ([`essiv_iv`] computes the same on its own) |
//! | `benbi` | big-endian count of cipher blocks (from 1) in the last 8 bytes |
//! | `null` | zeroes |

/// dm-crypt's 512-byte sector.
pub const SECTOR_SHIFT: u32 = 9;

/// The IV generators implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvMode {
    /// `plain`: the sector number truncated to 32 bits, little-endian.
    Plain,
    /// `plain64`: the sector number, little-endian.
    Plain64,
    /// `plain64be`: the sector number, big-endian, at the end of the IV.
    Plain64Be,
    /// `essiv:<hash>`: the sector number, little-endian, encrypted by the `essiv` template.
    Essiv,
    /// `benbi`: the count of cipher blocks before the sector, plus one, big-endian.
    Benbi,
    /// `null`: always zero.
    Null,
}

impl IvMode {
    const NAMES: [(Self, &'static str); 6] = [
        (Self::Plain, "plain"),
        (Self::Plain64, "plain64"),
        (Self::Plain64Be, "plain64be"),
        (Self::Essiv, "essiv"),
        (Self::Benbi, "benbi"),
        (Self::Null, "null"),
    ];

    /// The mode a cipher specification names (case-sensitive, like dm-crypt).
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map(|(m, _)| *m)
    }

    /// The mode's name in a cipher specification.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("", |(_, n)| n)
    }
}

/// Why an IV generator cannot be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvError {
    /// `benbi` needs a cipher block size that is a power of two.
    BlockSizeNotPowerOfTwo,
    /// `benbi` needs a cipher block size of at most 512 bytes.
    BlockSizeTooLarge,
    /// The IV is shorter than the 8 bytes every generator here writes.
    IvTooShort,
}

/// Turns target sectors into IV sector numbers, as dm-crypt's `crypt_convert_block_skcipher`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvSector {
    iv_offset: u64,
    sector_shift: u32,
    large_sectors: bool,
}

impl IvSector {
    /// `iv_offset` in 512-byte sectors, the encryption `sector_size` in bytes (a power of two
    /// from 512) and whether `iv_large_sectors` is set.
    pub fn new(iv_offset: u64, sector_size: u32, large_sectors: bool) -> Self {
        Self {
            iv_offset,
            sector_shift: sector_size.trailing_zeros().saturating_sub(SECTOR_SHIFT),
            large_sectors,
        }
    }

    /// The number the IV is made from for the encryption sector starting `target_sector`
    /// 512-byte sectors into the target (dm-crypt's `cc_sector`, shifted down for
    /// `iv_large_sectors`). Wraps like dm-crypt's `sector_t` arithmetic.
    pub fn of(&self, target_sector: u64) -> u64 {
        let sector = target_sector.wrapping_add(self.iv_offset);
        if self.large_sectors {
            sector >> self.sector_shift
        } else {
            sector
        }
    }

    /// 512-byte sectors per encryption sector: what `target_sector` advances by.
    pub fn step(&self) -> u64 {
        1 << self.sector_shift
    }
}

/// An IV generator for one cipher: mode and IV size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvGen {
    mode: IvMode,
    iv_size: usize,
    benbi_shift: u32,
}

impl IvGen {
    /// A generator for `mode` with the cipher's IV size and block size (both in bytes, from the
    /// crypto API). Like dm-crypt, the IV is made at least 8 bytes long so that a 64-bit sector
    /// number fits; [`IvGen::iv_size`] tells the length to use.
    pub fn new(mode: IvMode, cipher_iv_size: usize, block_size: usize) -> Result<Self, IvError> {
        if cipher_iv_size == 0 {
            return Err(IvError::IvTooShort);
        }
        let iv_size = cipher_iv_size.max(8);
        let mut benbi_shift = 0;
        if mode == IvMode::Benbi {
            if !block_size.is_power_of_two() {
                return Err(IvError::BlockSizeNotPowerOfTwo);
            }
            let log = block_size.trailing_zeros();
            if log > SECTOR_SHIFT {
                return Err(IvError::BlockSizeTooLarge);
            }
            benbi_shift = SECTOR_SHIFT - log;
        }
        Ok(Self {
            mode,
            iv_size,
            benbi_shift,
        })
    }

    /// The mode.
    pub fn mode(&self) -> IvMode {
        self.mode
    }

    /// Length of the IVs [`IvGen::generate`] writes.
    pub fn iv_size(&self) -> usize {
        self.iv_size
    }

    /// Writes the IV for IV sector `sector` (from [`IvSector::of`]) into `iv`, which must be
    /// [`IvGen::iv_size`] bytes long.
    pub fn generate(&self, sector: u64, iv: &mut [u8]) -> Result<(), IvError> {
        if iv.len() != self.iv_size {
            return Err(IvError::IvTooShort);
        }
        iv.fill(0);
        let tail = self.iv_size - 8;
        match self.mode {
            IvMode::Plain => iv[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
            IvMode::Plain64 | IvMode::Essiv => iv[..8].copy_from_slice(&sector.to_le_bytes()),
            IvMode::Plain64Be => iv[tail..].copy_from_slice(&sector.to_be_bytes()),
            IvMode::Benbi => {
                let blocks = (sector << self.benbi_shift).wrapping_add(1);
                iv[tail..].copy_from_slice(&blocks.to_be_bytes());
            }
            IvMode::Null => {}
        }
        Ok(())
    }
}

/// A hash function, for the ESSIV salt (the kernel side plugs in `crypto_shash`).
pub trait Digest {
    /// Digest size in bytes.
    fn size(&self) -> usize;
    /// Hashes `data` in one go into `out` (`size()` bytes).
    fn digest(&mut self, data: &[u8], out: &mut [u8]) -> Result<(), IvError>;
}

/// A block cipher encrypting one block in place, keyed beforehand.
pub trait BlockEncrypt {
    /// Block size in bytes.
    fn block_size(&self) -> usize;
    /// Sets the key.
    fn set_key(&mut self, key: &[u8]) -> Result<(), IvError>;
    /// Encrypts `block` (`block_size()` bytes) in place.
    fn encrypt_block(&mut self, block: &mut [u8]) -> Result<(), IvError>;
}

/// Largest digest [`essiv_iv`] handles: the kernel's `HASH_MAX_DIGESTSIZE`.
pub const MAX_DIGEST_SIZE: usize = 64;

/// The full ESSIV IV, as the crypto API's `essiv` template computes it from what dm-crypt hands
/// it (the `plain64` IV): the block cipher keyed with `hash(key)` encrypts the 64-bit
/// little-endian sector number, zero padded to the block. `iv` is one cipher block.
pub fn essiv_iv<D: Digest + ?Sized, C: BlockEncrypt + ?Sized>(
    hash: &mut D,
    cipher: &mut C,
    key: &[u8],
    sector: u64,
    iv: &mut [u8],
) -> Result<(), IvError> {
    let size = hash.size();
    if size > MAX_DIGEST_SIZE || iv.len() != cipher.block_size() || iv.len() < 8 {
        return Err(IvError::IvTooShort);
    }
    let mut salt = [0u8; MAX_DIGEST_SIZE];
    let r = hash
        .digest(key, &mut salt[..size])
        .and_then(|()| cipher.set_key(&salt[..size]));
    salt.fill(0);
    r?;
    iv.fill(0);
    iv[..8].copy_from_slice(&sector.to_le_bytes());
    cipher.encrypt_block(iv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(mode: IvMode, iv_size: usize, block: usize, sector: u64) -> std::vec::Vec<u8> {
        let g = IvGen::new(mode, iv_size, block).unwrap();
        let mut out = std::vec![0xaa; g.iv_size()];
        g.generate(sector, &mut out).unwrap();
        out
    }

    #[test]
    fn names() {
        for (mode, name) in IvMode::NAMES {
            assert_eq!(IvMode::from_name(name.as_bytes()), Some(mode));
            assert_eq!(mode.name(), name);
        }
        assert_eq!(IvMode::from_name(b"PLAIN64"), None);
        assert_eq!(IvMode::from_name(b"lmk"), None);
    }

    #[test]
    fn sectors() {
        let s = IvSector::new(0, 512, false);
        assert_eq!((s.of(0), s.of(7), s.step()), (0, 7, 1));
        let s = IvSector::new(16, 4096, false);
        assert_eq!((s.of(0), s.of(8), s.step()), (16, 24, 8));
        let s = IvSector::new(16, 4096, true);
        assert_eq!((s.of(0), s.of(8), s.of(16)), (2, 3, 4));
        // iv_large_sectors with 512-byte sectors changes nothing.
        assert_eq!(IvSector::new(5, 512, true).of(3), 8);
        assert_eq!(IvSector::new(u64::MAX, 512, false).of(2), 1);
    }

    #[test]
    fn generators() {
        let s = 0x0102_0304_0506_0708u64;
        assert_eq!(
            iv(IvMode::Plain, 16, 16, s)[..],
            [8, 7, 6, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            iv(IvMode::Plain64, 16, 16, s)[..],
            [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(iv(IvMode::Essiv, 16, 16, s), iv(IvMode::Plain64, 16, 16, s));
        assert_eq!(
            iv(IvMode::Plain64Be, 16, 16, s)[..],
            [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(iv(IvMode::Null, 16, 16, s), [0; 16]);
        // benbi: 16-byte blocks, 32 per sector: sector 3 starts at block 96, counted from 1.
        assert_eq!(iv(IvMode::Benbi, 16, 16, 3)[8..], 97u64.to_be_bytes());
        assert_eq!(iv(IvMode::Benbi, 8, 8, 3), 193u64.to_be_bytes());
        // IVs shorter than 8 bytes are widened to 8.
        assert_eq!(iv(IvMode::Plain64, 4, 4, 1), [1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            IvGen::new(IvMode::Benbi, 16, 24),
            Err(IvError::BlockSizeNotPowerOfTwo)
        );
        assert_eq!(
            IvGen::new(IvMode::Benbi, 16, 1024),
            Err(IvError::BlockSizeTooLarge)
        );
        assert!(IvGen::new(IvMode::Benbi, 16, 512).is_ok());
        assert!(IvGen::new(IvMode::Plain64, 16, 1024).is_ok());
        assert_eq!(IvGen::new(IvMode::Plain64, 0, 16), Err(IvError::IvTooShort));
        let g = IvGen::new(IvMode::Plain64, 16, 16).unwrap();
        assert_eq!(g.generate(0, &mut [0; 8]), Err(IvError::IvTooShort));
    }
}
