// SPDX-License-Identifier: GPL-2.0

//! dm-verity's hash tree: geometry, the block hashing rule, a tree builder, and veritysetup's
//! on-disk superblock.
//!
//! Pure logic: no kernel dependencies and no allocation, so the same file is built into the
//! module and tested on the host with `cargo test`.
//!
//! # Layout
//!
//! Every data block has a digest in level 0 of the tree, and every hash block of level `i` has a
//! digest in level `i + 1`. The top level is a single hash block, whose digest is the root digest
//! carried by the table line. On the hash device the levels are runs of consecutive hash blocks,
//! the top level first, starting at `hash_start`.
//!
//! A hash block holds `2^k` digests, `k = floor(log2(hash_block_size / digest_size))`. Format 1
//! pads each digest with zeroes to `hash_block_size >> k` bytes (a power of two); format 0 (the
//! original Chromium OS format) packs them `digest_size` bytes apart. The rest of a hash block is
//! zero. With a single data block there is no hash block at all: the root digest is that data
//! block's digest.
//!
//! A block's digest covers the salt too: format 1 hashes the salt before the block, format 0
//! after it.

use core::ffi::CStr;

/// The most tree levels dm-verity supports (`DM_VERITY_MAX_LEVELS`).
pub const MAX_LEVELS: usize = 63;

/// Smallest block size: one sector.
const MIN_BLOCK_SIZE: u32 = 512;

/// A geometry dm-verity would refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// The format version is neither 0 nor 1.
    Version,
    /// A block size is not a power of two of at least 512 bytes.
    BlockSize,
    /// The digest size is zero, or more than half a hash block.
    DigestSize,
    /// The tree would need more than [`MAX_LEVELS`] levels.
    TooManyLevels,
    /// The end of the hash area does not fit in a `u64` block number.
    HashOffsetOverflow,
}

impl GeometryError {
    /// The message dm-verity reports for this error (`ti->error`).
    pub fn message(self) -> &'static CStr {
        match self {
            Self::Version => c"Invalid version",
            Self::BlockSize => c"Invalid block size",
            Self::DigestSize => c"Digest size too big",
            Self::TooManyLevels => c"Too many tree levels",
            Self::HashOffsetOverflow => c"Hash device offset overflow",
        }
    }
}

/// Where every digest of a hash tree lives on the hash device.
///
/// Block numbers on the hash device are in hash-block units and absolute (they include
/// `hash_start`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    version: u32,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    hash_start: u64,
    digest_size: usize,
    /// log2 of the number of digests in a hash block.
    hash_per_block_bits: u32,
    levels: usize,
    /// First hash block of each level; level 0 is the lowest. Only `..levels` is meaningful.
    level_start: [u64; MAX_LEVELS],
    hash_end: u64,
}

impl Geometry {
    /// Computes the layout of a tree over `data_blocks` blocks whose top level starts at hash block
    /// `hash_start`, for format `version` and digests of `digest_size` bytes.
    ///
    /// Refuses what dm-verity's constructor refuses; never overflows.
    pub fn new(
        version: u32,
        data_block_size: u32,
        hash_block_size: u32,
        data_blocks: u64,
        hash_start: u64,
        digest_size: usize,
    ) -> Result<Self, GeometryError> {
        if version > 1 {
            return Err(GeometryError::Version);
        }
        let valid_size = |size: u32| size.is_power_of_two() && size >= MIN_BLOCK_SIZE;
        if !valid_size(data_block_size) || !valid_size(hash_block_size) {
            return Err(GeometryError::BlockSize);
        }
        let hashes_per_block = (hash_block_size as usize)
            .checked_div(digest_size)
            .filter(|&n| n >= 2)
            .ok_or(GeometryError::DigestSize)?;
        let hash_per_block_bits = hashes_per_block.ilog2();

        // The smallest number of levels whose top level is one block: each level divides the
        // number of digests by 2^hash_per_block_bits. A single data block needs no level.
        let mut levels = 0;
        if let Some(last) = data_blocks.checked_sub(1) {
            while last
                .checked_shr(hash_per_block_bits * levels)
                .is_some_and(|rest| rest != 0)
            {
                levels += 1;
            }
        }
        let levels = levels as usize;
        if levels > MAX_LEVELS {
            return Err(GeometryError::TooManyLevels);
        }

        let mut level_start = [0; MAX_LEVELS];
        let mut position = hash_start;
        for (level, start) in level_start.iter_mut().take(levels).enumerate().rev() {
            *start = position;
            let blocks = entries_at(data_blocks, hash_per_block_bits, level + 1);
            position = position
                .checked_add(blocks)
                .ok_or(GeometryError::HashOffsetOverflow)?;
        }

        Ok(Self {
            version,
            data_block_size,
            hash_block_size,
            data_blocks,
            hash_start,
            digest_size,
            hash_per_block_bits,
            levels,
            level_start,
            hash_end: position,
        })
    }

    /// The format version: 0 or 1.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data block size in bytes.
    pub fn data_block_size(&self) -> u32 {
        self.data_block_size
    }

    /// log2 of the data block size in sectors (the size is a power of two of at least 512).
    pub fn data_block_sector_shift(&self) -> u32 {
        self.data_block_size.trailing_zeros() - 9
    }

    /// Hash block size in bytes.
    pub fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }

    /// Number of data blocks the tree covers.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// Digest size in bytes.
    pub fn digest_size(&self) -> usize {
        self.digest_size
    }

    /// Number of digests in a hash block (a power of two).
    pub fn hashes_per_block(&self) -> u64 {
        1 << self.hash_per_block_bits
    }

    /// Number of tree levels (0 when there is at most one data block).
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// First hash block of the tree: the top level's only block.
    pub fn hash_start(&self) -> u64 {
        self.hash_start
    }

    /// One past the last hash block of the tree: the hash device must hold at least this many
    /// hash blocks.
    pub fn hash_end(&self) -> u64 {
        self.hash_end
    }

    /// Number of hash blocks in the tree.
    pub fn hash_blocks(&self) -> u64 {
        self.hash_end - self.hash_start
    }

    /// First hash block of `level` (0 is the lowest), or `None` past the top level.
    pub fn level_start(&self, level: usize) -> Option<u64> {
        self.level_start.get(..self.levels)?.get(level).copied()
    }

    /// Where the digest covering `data_block` at `level` lives: the hash block and the byte
    /// offset of the digest inside it. At level 0 that digest is the data block's own; at level
    /// `i > 0` it is the digest of the level `i - 1` hash block on `data_block`'s path to the root.
    ///
    /// `None` when `data_block` or `level` is out of range.
    pub fn digest_position(&self, data_block: u64, level: usize) -> Option<(u64, usize)> {
        if data_block >= self.data_blocks {
            return None;
        }
        let shift = self
            .hash_per_block_bits
            .checked_mul(u32::try_from(level).ok()?)?;
        self.slot(level, data_block.checked_shr(shift)?)
    }

    /// Bytes from one digest to the next in a hash block.
    fn digest_stride(&self) -> usize {
        if self.version == 0 {
            self.digest_size
        } else {
            (self.hash_block_size >> self.hash_per_block_bits) as usize
        }
    }

    /// Position of the `index`-th digest of `level`.
    fn slot(&self, level: usize, index: u64) -> Option<(u64, usize)> {
        let block = self
            .level_start(level)?
            .checked_add(index >> self.hash_per_block_bits)?;
        let in_block = (index & (self.hashes_per_block() - 1)) as usize;
        Some((block, in_block * self.digest_stride()))
    }

    /// Byte offset in a buffer holding the hash area (from `hash_start`) of `offset` in
    /// `hash_block`.
    fn area_offset(&self, hash_block: u64, offset: usize) -> Option<usize> {
        let blocks = usize::try_from(hash_block.checked_sub(self.hash_start)?).ok()?;
        blocks
            .checked_mul(self.hash_block_size as usize)?
            .checked_add(offset)
    }
}

/// Number of digests at `level` of a tree over `data_blocks` blocks (level 0 holds one digest per
/// data block), which is also the number of hash blocks at `level - 1`: `ceil(data_blocks /
/// 2^(level * bits))`, without overflow.
fn entries_at(data_blocks: u64, bits: u32, level: usize) -> u64 {
    let Some(last) = data_blocks.checked_sub(1) else {
        return 0;
    };
    let shift = u32::try_from(level)
        .ok()
        .and_then(|level| level.checked_mul(bits));
    match shift.and_then(|shift| last.checked_shr(shift)) {
        Some(rest) => rest + 1,
        None => 1,
    }
}

/// A hash computation failed (the kernel's crypto API can return errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashError;

/// An incremental hash function, like a `crypto_shash` descriptor.
pub trait Digest {
    /// Digest size in bytes.
    fn size(&self) -> usize;
    /// Starts a new digest.
    fn reset(&mut self) -> Result<(), HashError>;
    /// Hashes `data`.
    fn update(&mut self, data: &[u8]) -> Result<(), HashError>;
    /// Writes the digest into `out`, which is [`size`](Digest::size) bytes long.
    fn finish(&mut self, out: &mut [u8]) -> Result<(), HashError>;
}

/// Computes the digest of one data or hash block into `out` (`d.size()` bytes), with the salt
/// where format `version` puts it: before the block for version 1, after it for version 0.
pub fn hash_block<D: Digest + ?Sized>(
    d: &mut D,
    version: u32,
    salt: &[u8],
    block: &[u8],
    out: &mut [u8],
) -> Result<(), HashError> {
    if out.len() != d.size() {
        return Err(HashError);
    }
    d.reset()?;
    if version == 0 {
        d.update(block)?;
        d.update(salt)?;
    } else {
        d.update(salt)?;
        d.update(block)?;
    }
    d.finish(out)
}

/// Why [`build_tree`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A buffer or the digest does not have the size the geometry needs.
    Size,
    /// The geometry has no data block.
    Empty,
    /// Hashing failed.
    Hash,
}

impl From<HashError> for BuildError {
    fn from(_: HashError) -> Self {
        Self::Hash
    }
}

/// Builds the hash tree described by `geo`, as veritysetup writes it.
///
/// `read_data(n, buf)` fills `buf` with data block `n`; `data_block` is scratch space of one data
/// block. `hash_area` receives hash blocks `geo.hash_start()..geo.hash_end()`
/// (`geo.hash_blocks() * geo.hash_block_size()` bytes, zero padding included), and `root` the root
/// digest (`geo.digest_size()` bytes).
pub fn build_tree<D: Digest + ?Sized>(
    geo: &Geometry,
    d: &mut D,
    salt: &[u8],
    mut read_data: impl FnMut(u64, &mut [u8]),
    data_block: &mut [u8],
    hash_area: &mut [u8],
    root: &mut [u8],
) -> Result<(), BuildError> {
    let hash_block_size = geo.hash_block_size as usize;
    let area_size = geo
        .hash_blocks()
        .checked_mul(geo.hash_block_size.into())
        .and_then(|size| usize::try_from(size).ok());
    if d.size() != geo.digest_size
        || root.len() != geo.digest_size
        || data_block.len() != geo.data_block_size as usize
        || area_size != Some(hash_area.len())
    {
        return Err(BuildError::Size);
    }
    if geo.data_blocks == 0 {
        return Err(BuildError::Empty);
    }

    // `root` holds each digest until it is stored; the last one computed is the root digest.
    hash_area.fill(0);
    for n in 0..geo.data_blocks {
        read_data(n, data_block);
        hash_block(d, geo.version, salt, data_block, root)?;
        if geo.levels == 0 {
            // A single data block: its digest is the root digest.
            return Ok(());
        }
        store_digest(geo, hash_area, 0, n, root)?;
    }
    for level in 1..=geo.levels {
        let first = geo.level_start(level - 1).ok_or(BuildError::Size)?;
        for n in 0..entries_at(geo.data_blocks, geo.hash_per_block_bits, level) {
            let block = first
                .checked_add(n)
                .and_then(|block| geo.area_offset(block, 0))
                .and_then(|at| hash_area.get(at..at.checked_add(hash_block_size)?))
                .ok_or(BuildError::Size)?;
            hash_block(d, geo.version, salt, block, root)?;
            if level < geo.levels {
                store_digest(geo, hash_area, level, n, root)?;
            }
        }
    }
    Ok(())
}

/// Stores `digest` as the `index`-th digest of `level` in `hash_area`.
fn store_digest(
    geo: &Geometry,
    hash_area: &mut [u8],
    level: usize,
    index: u64,
    digest: &[u8],
) -> Result<(), BuildError> {
    let (block, offset) = geo.slot(level, index).ok_or(BuildError::Size)?;
    let at = geo.area_offset(block, offset).ok_or(BuildError::Size)?;
    hash_area
        .get_mut(at..at.checked_add(digest.len()).ok_or(BuildError::Size)?)
        .ok_or(BuildError::Size)?
        .copy_from_slice(digest);
    Ok(())
}

/// Size of veritysetup's superblock in bytes.
pub const SUPERBLOCK_SIZE: usize = 512;

/// Largest salt a superblock holds.
pub const SUPERBLOCK_MAX_SALT: usize = 256;

/// Largest block size veritysetup accepts.
const SUPERBLOCK_MAX_BLOCK_SIZE: u32 = 512 * 1024;

/// Why a superblock was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockError {
    /// Fewer than [`SUPERBLOCK_SIZE`] bytes.
    TooShort,
    /// No `"verity\0\0"` signature: not a verity superblock.
    Signature,
    /// Superblock version other than 1.
    Version,
    /// Hash format (`hash_type`) other than 0 or 1.
    HashType,
    /// A block size is not a power of two in 512 bytes ..= 512 KiB.
    BlockSize,
    /// The algorithm name is empty or not printable ASCII.
    Algorithm,
    /// The salt size is above [`SUPERBLOCK_MAX_SALT`].
    SaltSize,
}

/// veritysetup's on-disk superblock: 512 bytes, little-endian, at the start of the hash area
/// (`--hash-offset`). The hash tree follows at the next hash block boundary, see
/// [`Superblock::hash_start`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock<'a> {
    /// Hash format: the table line's version (0 or 1).
    pub hash_type: u32,
    /// UUID of the hash device, raw.
    pub uuid: [u8; 16],
    /// Hash algorithm name, as the table line names it (e.g. `sha256`).
    pub algorithm: &'a str,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Number of data blocks.
    pub data_blocks: u64,
    /// The salt (may be empty).
    pub salt: &'a [u8],
}

/// The signature opening a superblock.
const SIGNATURE: &[u8; 8] = b"verity\0\0";

impl<'a> Superblock<'a> {
    /// Parses and validates a superblock (the first [`SUPERBLOCK_SIZE`] bytes of `buf`) the way
    /// veritysetup does when it opens one.
    pub fn parse(buf: &'a [u8]) -> Result<Self, SuperblockError> {
        if buf.len() < SUPERBLOCK_SIZE {
            return Err(SuperblockError::TooShort);
        }
        let mut rest = buf;
        let signature: &[u8; 8] = take(&mut rest)?;
        let version = u32::from_le_bytes(*take(&mut rest)?);
        let hash_type = u32::from_le_bytes(*take(&mut rest)?);
        let uuid: &[u8; 16] = take(&mut rest)?;
        let algorithm: &[u8; 32] = take(&mut rest)?;
        let data_block_size = u32::from_le_bytes(*take(&mut rest)?);
        let hash_block_size = u32::from_le_bytes(*take(&mut rest)?);
        let data_blocks = u64::from_le_bytes(*take(&mut rest)?);
        let salt_size = u16::from_le_bytes(*take(&mut rest)?);
        let _pad: &[u8; 6] = take(&mut rest)?;
        let salt: &[u8; SUPERBLOCK_MAX_SALT] = take(&mut rest)?;

        if signature != SIGNATURE {
            return Err(SuperblockError::Signature);
        }
        if version != 1 {
            return Err(SuperblockError::Version);
        }
        if hash_type > 1 {
            return Err(SuperblockError::HashType);
        }
        let valid_size = |size: u32| {
            size.is_power_of_two() && (MIN_BLOCK_SIZE..=SUPERBLOCK_MAX_BLOCK_SIZE).contains(&size)
        };
        if !valid_size(data_block_size) || !valid_size(hash_block_size) {
            return Err(SuperblockError::BlockSize);
        }
        let name_len = algorithm
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(algorithm.len());
        let name = algorithm.get(..name_len).unwrap_or_default();
        if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            return Err(SuperblockError::Algorithm);
        }
        let algorithm = core::str::from_utf8(name).map_err(|_| SuperblockError::Algorithm)?;
        let salt = salt
            .get(..usize::from(salt_size))
            .ok_or(SuperblockError::SaltSize)?;

        Ok(Self {
            hash_type,
            uuid: *uuid,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt,
        })
    }

    /// The table line's `hash_start_block` for a superblock found `offset` bytes into the hash
    /// device: the first hash block after it. `None` on overflow.
    pub fn hash_start(&self, offset: u64) -> Option<u64> {
        offset
            .checked_add(SUPERBLOCK_SIZE as u64)?
            .checked_next_multiple_of(self.hash_block_size.into())
            .map(|end| end / u64::from(self.hash_block_size))
    }
}

/// Takes the next `N` bytes of `buf`.
fn take<'a, const N: usize>(buf: &mut &'a [u8]) -> Result<&'a [u8; N], SuperblockError> {
    let (field, rest) = buf.split_first_chunk().ok_or(SuperblockError::TooShort)?;
    *buf = rest;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A toy digest for unit tests: records what it is fed, so tests can check the salt order,
    /// and sums it up into `size` bytes.
    struct Toy {
        size: usize,
        fed: Vec<u8>,
    }

    impl Toy {
        fn new(size: usize) -> Self {
            Self {
                size,
                fed: Vec::new(),
            }
        }
    }

    impl Digest for Toy {
        fn size(&self) -> usize {
            self.size
        }
        fn reset(&mut self) -> Result<(), HashError> {
            self.fed.clear();
            Ok(())
        }
        fn update(&mut self, data: &[u8]) -> Result<(), HashError> {
            self.fed.extend_from_slice(data);
            Ok(())
        }
        fn finish(&mut self, out: &mut [u8]) -> Result<(), HashError> {
            // FNV-1a, spread over the output; nonzero so stored digests are visible.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in &self.fed {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            for (i, o) in out.iter_mut().enumerate() {
                *o = (h >> (8 * (i % 8))) as u8 | 1;
            }
            Ok(())
        }
    }

    fn geo(version: u32, hash_block: u32, blocks: u64, start: u64, digest: usize) -> Geometry {
        Geometry::new(version, 4096, hash_block, blocks, start, digest).unwrap()
    }

    #[test]
    fn levels_and_starts() {
        // sha256 in 4096-byte hash blocks: 128 digests a block.
        let g = geo(1, 4096, 0, 5, 32);
        assert_eq!((g.levels(), g.hash_blocks(), g.hash_end()), (0, 0, 5));
        let g = geo(1, 4096, 1, 5, 32);
        assert_eq!((g.levels(), g.hash_blocks()), (0, 0));
        assert_eq!(g.digest_position(0, 0), None);
        let g = geo(1, 4096, 2, 5, 32);
        assert_eq!(
            (g.levels(), g.hash_blocks(), g.level_start(0)),
            (1, 1, Some(5))
        );
        let g = geo(1, 4096, 128, 0, 32);
        assert_eq!((g.levels(), g.hash_blocks()), (1, 1));
        let g = geo(1, 4096, 129, 0, 32);
        assert_eq!((g.levels(), g.hash_blocks()), (2, 3));
        assert_eq!(
            (g.level_start(1), g.level_start(0), g.level_start(2)),
            (Some(0), Some(1), None)
        );
        let g = geo(1, 4096, 128 * 128, 10, 32);
        assert_eq!((g.levels(), g.hash_blocks(), g.hash_end()), (2, 129, 139));
        let g = geo(1, 4096, 128 * 128 + 1, 10, 32);
        assert_eq!(g.levels(), 3);
        assert_eq!(g.hash_blocks(), 1 + 2 + 129);
        assert_eq!(
            (g.level_start(2), g.level_start(1), g.level_start(0)),
            (Some(10), Some(11), Some(13))
        );
    }

    #[test]
    fn hashes_per_block_rounds_down_to_a_power_of_two() {
        // sha1 (20 bytes) in 4096-byte blocks: 204 fit, 128 are used.
        assert_eq!(geo(1, 4096, 1, 0, 20).hashes_per_block(), 128);
        assert_eq!(geo(0, 4096, 1, 0, 20).hashes_per_block(), 128);
        // sha512 in 512-byte blocks: 8.
        assert_eq!(geo(1, 512, 1, 0, 64).hashes_per_block(), 8);
    }

    #[test]
    fn positions_by_version() {
        // sha1: version 1 pads digests to 32 bytes, version 0 packs them 20 apart.
        let v1 = geo(1, 4096, 129, 7, 20);
        let v0 = geo(0, 4096, 129, 7, 20);
        assert_eq!(v1.digest_position(0, 0), Some((8, 0)));
        assert_eq!(v1.digest_position(5, 0), Some((8, 5 * 32)));
        assert_eq!(v0.digest_position(5, 0), Some((8, 5 * 20)));
        assert_eq!(v1.digest_position(127, 0), Some((8, 127 * 32)));
        assert_eq!(v1.digest_position(128, 0), Some((9, 0)));
        assert_eq!(v1.digest_position(128, 1), Some((7, 32)));
        assert_eq!(v0.digest_position(128, 1), Some((7, 20)));
        assert_eq!(v1.digest_position(127, 1), Some((7, 0)));
        assert_eq!(v1.digest_position(129, 0), None);
        assert_eq!(v1.digest_position(0, 2), None);
        assert_eq!(v1.digest_position(0, usize::MAX), None);
    }

    #[test]
    fn refused_geometries() {
        let new = |v, dbs, hbs, n, start, ds| Geometry::new(v, dbs, hbs, n, start, ds);
        assert_eq!(new(2, 4096, 4096, 1, 0, 32), Err(GeometryError::Version));
        for bad in [0, 256, 3000] {
            assert_eq!(new(1, bad, 4096, 1, 0, 32), Err(GeometryError::BlockSize));
            assert_eq!(new(1, 4096, bad, 1, 0, 32), Err(GeometryError::BlockSize));
        }
        assert_eq!(new(1, 512, 512, 1, 0, 0), Err(GeometryError::DigestSize));
        assert_eq!(new(1, 512, 512, 1, 0, 257), Err(GeometryError::DigestSize));
        assert!(new(1, 512, 512, 1, 0, 256).is_ok());
        // One digest bit per level: 64 levels for 2^64 - 1 blocks.
        assert_eq!(
            new(1, 512, 512, u64::MAX, 0, 256),
            Err(GeometryError::TooManyLevels)
        );
        assert_eq!(new(1, 512, 512, 1 << 63, 0, 256).unwrap().levels(), 63);
        assert_eq!(
            new(1, 512, 4096, 2, u64::MAX, 32),
            Err(GeometryError::HashOffsetOverflow)
        );
        assert!(new(1, 512, 4096, 2, u64::MAX - 1, 32).is_ok());
        assert_eq!(
            GeometryError::TooManyLevels.message(),
            c"Too many tree levels"
        );
    }

    #[test]
    fn huge_trees_do_not_overflow() {
        // Top-level shift of 64 bits or more must count one block, not wrap.
        let g = Geometry::new(1, 512, 512, u64::MAX, 0, 32).unwrap();
        assert_eq!(g.levels(), 16);
        assert_eq!(g.level_start(15), Some(0));
        assert_eq!(g.level_start(14), Some(1));
        let last = g.digest_position(u64::MAX - 1, 0).unwrap();
        assert_eq!(last, (g.hash_end() - 1, 14 * 32));
        assert_eq!(g.digest_position(u64::MAX - 1, 15), Some((0, 15 * 32)));
    }

    #[test]
    fn salt_order() {
        let mut d = Toy::new(4);
        let mut out = [0; 4];
        hash_block(&mut d, 1, b"salt", b"block", &mut out).unwrap();
        assert_eq!(d.fed, b"saltblock");
        hash_block(&mut d, 0, b"salt", b"block", &mut out).unwrap();
        assert_eq!(d.fed, b"blocksalt");
        assert_eq!(hash_block(&mut d, 0, b"", b"", &mut [0; 3]), Err(HashError));
    }

    /// Checks every data block of a built tree the way dm-verity does: from the root down.
    fn verify_all(g: &Geometry, salt: &[u8], data: &[u8], area: &[u8], root: &[u8]) {
        let ds = g.digest_size();
        let hbs = g.hash_block_size() as usize;
        let mut d = Toy::new(ds);
        let mut got = vec![0; ds];
        for (n, block) in data.chunks(g.data_block_size() as usize).enumerate() {
            let mut want = root.to_vec();
            for level in (0..g.levels()).rev() {
                let (hb, off) = g.digest_position(n as u64, level).unwrap();
                let at = (hb - g.hash_start()) as usize * hbs;
                hash_block(&mut d, g.version(), salt, &area[at..at + hbs], &mut got).unwrap();
                assert_eq!(got, want, "block {n} level {level}");
                want = area[at + off..at + off + ds].to_vec();
            }
            hash_block(&mut d, g.version(), salt, block, &mut got).unwrap();
            assert_eq!(got, want, "data block {n}");
        }
    }

    fn build(g: &Geometry, salt: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let dbs = g.data_block_size() as usize;
        let data: Vec<u8> = (0..g.data_blocks() as usize * dbs)
            .map(|i| (i * 7 / 3) as u8)
            .collect();
        let mut area = vec![0xaa; g.hash_blocks() as usize * g.hash_block_size() as usize];
        let mut root = vec![0; g.digest_size()];
        let read = |n: u64, buf: &mut [u8]| {
            let at = n as usize * dbs;
            buf.copy_from_slice(&data[at..at + dbs]);
        };
        let mut d = Toy::new(g.digest_size());
        build_tree(
            g,
            &mut d,
            salt,
            read,
            &mut vec![0; dbs],
            &mut area,
            &mut root,
        )
        .unwrap();
        (data, area, root)
    }

    #[test]
    fn built_trees_verify() {
        for version in [0, 1] {
            for blocks in [1, 2, 8, 9, 64, 65, 100] {
                // 512-byte hash blocks of 20-byte digests: 16 a block (3 levels from 257 blocks).
                let g = Geometry::new(version, 512, 512, blocks, 3, 20).unwrap();
                let (data, area, root) = build(&g, b"pepper");
                verify_all(&g, b"pepper", &data, &area, &root);
            }
        }
        let g = Geometry::new(1, 512, 512, 300, 0, 20).unwrap();
        assert_eq!(g.levels(), 3);
        let (data, area, root) = build(&g, b"");
        verify_all(&g, b"", &data, &area, &root);
    }

    #[test]
    fn padding_is_zero() {
        // 20-byte digests of 3 data blocks: version 1 puts them 32 bytes apart, version 0 packs
        // them; everything else is zero.
        let g = Geometry::new(1, 512, 512, 3, 0, 20).unwrap();
        let (_, area, _) = build(&g, b"s");
        for (i, slot) in area.chunks(32).enumerate() {
            assert_eq!(slot[..20].iter().all(|&b| b != 0), i < 3, "slot {i}");
            assert!(slot[20..].iter().all(|&b| b == 0), "slot {i}");
        }
        let g = Geometry::new(0, 512, 512, 3, 0, 20).unwrap();
        let (_, area, _) = build(&g, b"s");
        assert!(area[..60].iter().all(|&b| b != 0));
        assert!(area[60..].iter().all(|&b| b == 0));
    }

    #[test]
    fn single_block_root_is_its_digest() {
        let g = Geometry::new(1, 512, 512, 1, 0, 20).unwrap();
        let (data, area, root) = build(&g, b"s");
        assert!(area.is_empty());
        let mut want = [0; 20];
        hash_block(&mut Toy::new(20), 1, b"s", &data, &mut want).unwrap();
        assert_eq!(root, want);
    }

    #[test]
    fn build_refuses_bad_buffers() {
        // 9 blocks, 16 digests a hash block: one level of one block.
        let g = Geometry::new(1, 512, 512, 9, 0, 20).unwrap();
        let mut d = Toy::new(20);
        let (mut area, mut root, mut buf) = (vec![0; 512], vec![0; 20], vec![0; 512]);
        let read = |_: u64, _: &mut [u8]| {};
        assert!(build_tree(&g, &mut d, b"", read, &mut buf, &mut area, &mut root).is_ok());
        let size = Err(BuildError::Size);
        assert_eq!(
            build_tree(&g, &mut d, b"", read, &mut buf, &mut [0; 1024], &mut root),
            size
        );
        assert_eq!(
            build_tree(&g, &mut d, b"", read, &mut buf[..256], &mut area, &mut root),
            size
        );
        assert_eq!(
            build_tree(&g, &mut d, b"", read, &mut buf, &mut area, &mut root[..19]),
            size
        );
        assert_eq!(
            build_tree(
                &g,
                &mut Toy::new(32),
                b"",
                read,
                &mut buf,
                &mut area,
                &mut root
            ),
            size
        );
        let empty = Geometry::new(1, 512, 512, 0, 0, 20).unwrap();
        assert_eq!(
            build_tree(&empty, &mut d, b"", read, &mut buf, &mut [], &mut root),
            Err(BuildError::Empty)
        );
    }

    fn superblock(hash_type: u32, alg: &[u8], dbs: u32, hbs: u32, salt: &[u8]) -> Vec<u8> {
        let mut sb = vec![0; SUPERBLOCK_SIZE];
        sb[..8].copy_from_slice(SIGNATURE);
        sb[8..12].copy_from_slice(&1u32.to_le_bytes());
        sb[12..16].copy_from_slice(&hash_type.to_le_bytes());
        sb[16..32].copy_from_slice(&[0x11; 16]);
        sb[32..32 + alg.len()].copy_from_slice(alg);
        sb[64..68].copy_from_slice(&dbs.to_le_bytes());
        sb[68..72].copy_from_slice(&hbs.to_le_bytes());
        sb[72..80].copy_from_slice(&1000u64.to_le_bytes());
        sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        sb[88..88 + salt.len()].copy_from_slice(salt);
        sb
    }

    #[test]
    fn superblock_fields() {
        let buf = superblock(0, b"sha256", 4096, 512, b"abc");
        let sb = Superblock::parse(&buf).unwrap();
        assert_eq!(sb.hash_type, 0);
        assert_eq!(sb.uuid, [0x11; 16]);
        assert_eq!(sb.algorithm, "sha256");
        assert_eq!(
            (sb.data_block_size, sb.hash_block_size, sb.data_blocks),
            (4096, 512, 1000)
        );
        assert_eq!(sb.salt, b"abc");
        assert_eq!(sb.hash_start(0), Some(1));
        assert_eq!(sb.hash_start(512), Some(2));
        assert_eq!(sb.hash_start(u64::MAX - 511), None);
        let buf = superblock(1, &[b'x'; 32], 512, 4096, &[7; 256]);
        let sb = Superblock::parse(&buf).unwrap();
        assert_eq!((sb.algorithm.len(), sb.salt.len()), (32, 256));
        assert_eq!(sb.hash_start(0), Some(1));
        assert_eq!(sb.hash_start(4096 * 3), Some(4));
    }

    #[test]
    fn superblock_errors() {
        use SuperblockError as E;
        let good = superblock(1, b"sha1", 4096, 4096, b"");
        let bad = |at: usize, bytes: &[u8]| {
            let mut buf = good.clone();
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            Superblock::parse(&buf).err()
        };
        assert!(Superblock::parse(&good).is_ok());
        assert_eq!(Superblock::parse(&good[..511]), Err(E::TooShort));
        assert_eq!(bad(6, b"\0\x01"), Some(E::Signature));
        assert_eq!(bad(8, &2u32.to_le_bytes()), Some(E::Version));
        assert_eq!(bad(12, &2u32.to_le_bytes()), Some(E::HashType));
        for size in [0u32, 256, 4095, 1024 * 1024] {
            assert_eq!(bad(64, &size.to_le_bytes()), Some(E::BlockSize));
            assert_eq!(bad(68, &size.to_le_bytes()), Some(E::BlockSize));
        }
        assert_eq!(bad(32, b"\0"), Some(E::Algorithm));
        assert_eq!(bad(32, b"sha 1"), Some(E::Algorithm));
        assert_eq!(bad(32, b"sh\xff1"), Some(E::Algorithm));
        assert_eq!(bad(80, &257u16.to_le_bytes()), Some(E::SaltSize));
    }
}
