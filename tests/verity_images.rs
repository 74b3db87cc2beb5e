// SPDX-License-Identifier: GPL-2.0

//! The dm-verity format against the reference: images made by the real `veritysetup format`
//! (Debian/Ubuntu package `cryptsetup-bin`), which must be installed.
//!
//! For each image: our tree built over the data file must give veritysetup's root hash and the
//! very bytes of its hash area; every checked data block must verify from the root down through
//! veritysetup's hash blocks at the positions `Geometry::digest_position` gives, as dm-verity
//! reads them; the superblock must parse to the parameters used; and the table line naming the
//! image must parse and print back unchanged.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dm_rust_pure::args::Args;
use dm_rust_pure::verity_table::VerityTable;
use dm_rust_pure::verity_tree::{build_tree, hash_block, Digest, Geometry, HashError, Superblock};
use sha2::digest::FixedOutputReset;

/// A RustCrypto hash as a tree [`Digest`].
struct Host<H>(H);

impl<H: sha2::Digest + FixedOutputReset> Digest for Host<H> {
    fn size(&self) -> usize {
        <H as sha2::Digest>::output_size()
    }
    fn reset(&mut self) -> Result<(), HashError> {
        sha2::Digest::reset(&mut self.0);
        Ok(())
    }
    fn update(&mut self, data: &[u8]) -> Result<(), HashError> {
        sha2::Digest::update(&mut self.0, data);
        Ok(())
    }
    fn finish(&mut self, out: &mut [u8]) -> Result<(), HashError> {
        out.copy_from_slice(&self.0.finalize_reset());
        Ok(())
    }
}

/// The host digest for an algorithm name of the table line.
fn digest(algorithm: &str) -> Box<dyn Digest> {
    match algorithm {
        "sha1" => Box::new(Host(sha1::Sha1::default())),
        "sha256" => Box::new(Host(sha2::Sha256::default())),
        "sha512" => Box::new(Host(sha2::Sha512::default())),
        _ => panic!("no host digest for {algorithm}"),
    }
}

/// Where veritysetup puts the hash tree.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// A hash file of its own, starting with a superblock.
    Superblock,
    /// A hash file of its own holding only the tree (`--no-superblock`).
    Bare,
    /// In the data file, from `--hash-offset` bytes, with or without a superblock.
    SameFile { hash_offset: u64, superblock: bool },
}

/// One `veritysetup format` run.
struct Case {
    /// Scratch directory name.
    name: &'static str,
    algorithm: &'static str,
    version: u32,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    /// The `--salt` argument: hex, `-` or empty (both no salt).
    salt: String,
    layout: Layout,
    /// Bytes after the data area in the data file, which the tree must not cover.
    trailing: usize,
}

impl Case {
    fn new(name: &'static str, algorithm: &'static str, version: u32, sizes: (u32, u32)) -> Self {
        Self {
            name,
            algorithm,
            version,
            data_block_size: sizes.0,
            hash_block_size: sizes.1,
            data_blocks: 1,
            salt: "-".into(),
            layout: Layout::Superblock,
            trailing: 0,
        }
    }

    fn blocks(self, data_blocks: u64) -> Self {
        Self {
            data_blocks,
            ..self
        }
    }

    fn salt(self, salt: &str) -> Self {
        Self {
            salt: salt.into(),
            ..self
        }
    }

    fn layout(self, layout: Layout) -> Self {
        Self { layout, ..self }
    }

    fn trailing(self, trailing: usize) -> Self {
        Self { trailing, ..self }
    }

    fn salt_bytes(&self) -> Vec<u8> {
        match self.salt.as_str() {
            "-" => Vec::new(),
            hex => unhex(hex),
        }
    }

    /// The salt as veritysetup reports it and the table line gives it.
    fn salt_field(&self) -> String {
        match self.salt_bytes() {
            salt if salt.is_empty() => "-".into(),
            salt => hex(&salt),
        }
    }
}

/// An image made by veritysetup.
struct Image {
    dir: PathBuf,
    data_path: PathBuf,
    hash_path: PathBuf,
    data: Vec<u8>,
    hash: Vec<u8>,
    /// veritysetup's "Root hash:".
    root: Vec<u8>,
    /// Where the tree starts on the hash file, in hash blocks.
    hash_start: u64,
}

impl Drop for Image {
    fn drop(&mut self) {
        // Kept when a check failed, for a look at the files.
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The veritysetup binary, which may live in an sbin directory that is not in `PATH`.
fn veritysetup() -> PathBuf {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("veritysetup"))
        .find(|p| p.is_file())
        .expect(
            "veritysetup not found (in PATH, /usr/sbin or /sbin): these tests compare against \
             it; install it, e.g. `apt-get install cryptsetup-bin` on Debian/Ubuntu",
        )
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The value of a `Name: value` line of veritysetup's report.
fn report_field<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name:?} in veritysetup's report:\n{report}"))
        .trim()
}

/// Runs `veritysetup format` for `case` in a fresh scratch directory.
fn make_image(case: &Case) -> Image {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("verity_images")
        .join(case.name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let data_path = dir.join("data.img");
    let area = case.data_blocks as usize * case.data_block_size as usize;
    let seed = case
        .name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let data = pattern(area + case.trailing, seed);
    fs::write(&data_path, &data).unwrap();

    let (hash_path, hash_offset, superblock) = match case.layout {
        Layout::Superblock => (dir.join("hash.img"), 0, true),
        Layout::Bare => (dir.join("hash.img"), 0, false),
        Layout::SameFile {
            hash_offset,
            superblock,
        } => (data_path.clone(), hash_offset, superblock),
    };
    let mut cmd = Command::new(veritysetup());
    cmd.arg("format")
        .arg(&data_path)
        .arg(&hash_path)
        .arg(format!("--hash={}", case.algorithm))
        .arg(format!("--format={}", case.version))
        .arg(format!("--data-block-size={}", case.data_block_size))
        .arg(format!("--hash-block-size={}", case.hash_block_size))
        .arg(format!("--data-blocks={}", case.data_blocks))
        .arg(format!("--salt={}", case.salt))
        .arg(format!("--hash-offset={hash_offset}"));
    if !superblock {
        cmd.arg("--no-superblock");
    }
    let out = cmd.output().expect("run veritysetup");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report_field(&report, "Salt"), case.salt_field());

    let hash = fs::read(&hash_path).unwrap();
    let hash_start = if superblock {
        let sb = Superblock::parse(&hash[hash_offset as usize..]).expect("superblock");
        check_superblock(case, &sb);
        sb.hash_start(hash_offset).unwrap()
    } else {
        hash_offset / u64::from(case.hash_block_size)
    };
    Image {
        dir,
        data_path,
        hash_path,
        data: data[..area].to_vec(),
        hash,
        root: unhex(report_field(&report, "Root hash")),
        hash_start,
    }
}

fn check_superblock(case: &Case, sb: &Superblock<'_>) {
    assert_eq!(sb.hash_type, case.version);
    assert_eq!(sb.algorithm, case.algorithm);
    assert_eq!(sb.data_block_size, case.data_block_size);
    assert_eq!(sb.hash_block_size, case.hash_block_size);
    assert_eq!(sb.data_blocks, case.data_blocks);
    assert_eq!(sb.salt, case.salt_bytes());
    assert_ne!(sb.uuid, [0; 16], "veritysetup gives the hash device a UUID");
}

/// Checks data block `n` as dm-verity does: from the root digest down through the hash blocks of
/// `hash` (the whole hash device), then the data block itself. Returns the failing level, with
/// `None` for the data block.
fn verify_block(
    geo: &Geometry,
    d: &mut dyn Digest,
    salt: &[u8],
    root: &[u8],
    hash: &[u8],
    block: &[u8],
    n: u64,
) -> Result<(), Option<usize>> {
    let hash_block_size = geo.hash_block_size() as usize;
    let mut want = root.to_vec();
    let mut got = vec![0; geo.digest_size()];
    for level in (0..geo.levels()).rev() {
        let (position, offset) = geo.digest_position(n, level).unwrap();
        let at = position as usize * hash_block_size;
        let bytes = &hash[at..at + hash_block_size];
        hash_block(d, geo.version(), salt, bytes, &mut got).unwrap();
        if got != want {
            return Err(Some(level));
        }
        want = bytes[offset..offset + geo.digest_size()].to_vec();
    }
    hash_block(d, geo.version(), salt, block, &mut got).unwrap();
    if got != want {
        return Err(None);
    }
    Ok(())
}

/// Formats `case` with veritysetup and checks everything we compute against it. Returns the
/// geometry, for checks of its own.
fn check(case: Case) -> Geometry {
    let img = make_image(&case);
    let mut d = digest(case.algorithm);
    let salt = case.salt_bytes();
    let (dbs, hbs) = (case.data_block_size as usize, case.hash_block_size as usize);
    let geo = Geometry::new(
        case.version,
        case.data_block_size,
        case.hash_block_size,
        case.data_blocks,
        img.hash_start,
        d.size(),
    )
    .unwrap();

    // Our tree equals veritysetup's, byte for byte.
    let mut area = vec![0; geo.hash_blocks() as usize * hbs];
    let mut root = vec![0; d.size()];
    let read = |n: u64, buf: &mut [u8]| {
        let at = n as usize * dbs;
        buf.copy_from_slice(&img.data[at..at + dbs]);
    };
    build_tree(
        &geo,
        &mut *d,
        &salt,
        read,
        &mut vec![0; dbs],
        &mut area,
        &mut root,
    )
    .unwrap();
    assert_eq!(hex(&root), hex(&img.root), "root digest");
    let (start, end) = (
        geo.hash_start() as usize * hbs,
        geo.hash_end() as usize * hbs,
    );
    assert!(
        img.hash.len() >= end,
        "hash file of {} bytes ends before {end}",
        img.hash.len()
    );
    assert!(
        img.hash[start..end] == area[..],
        "hash area differs from veritysetup's"
    );
    if img.hash_path != img.data_path {
        assert_eq!(img.hash.len(), end, "veritysetup wrote more than the tree");
    }

    // dm-verity's walk finds every digest where veritysetup put it.
    let step = (case.data_blocks / 500).max(1);
    let last = case.data_blocks - 1;
    for n in (0..case.data_blocks).step_by(step as usize).chain([last]) {
        let block = &img.data[n as usize * dbs..][..dbs];
        let r = verify_block(&geo, &mut *d, &salt, &img.root, &img.hash, block, n);
        assert_eq!(r, Ok(()), "data block {n}");
    }

    // The table line veritysetup's parameters make.
    let line = format!(
        "{} {} {} {} {} {} {} {} {} {}",
        case.version,
        img.data_path.display(),
        img.hash_path.display(),
        case.data_block_size,
        case.hash_block_size,
        case.data_blocks,
        img.hash_start,
        case.algorithm,
        hex(&img.root),
        case.salt_field(),
    );
    let argv: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    let table = VerityTable::parse(&mut Args::new(&argv), 4096).expect(&line);
    table.check_digest_size(d.size()).unwrap();
    assert_eq!(table.salt(), salt);
    assert_eq!(table.hash_start(), geo.hash_start());
    let mut out = String::new();
    let name = |arg| std::str::from_utf8(arg).unwrap();
    table
        .write_table(&mut out, name(argv[1]), name(argv[2]))
        .unwrap();
    assert_eq!(out, line);
    geo
}

/// 256 salt bytes, the most a superblock holds.
fn long_salt() -> String {
    hex(&pattern(256, 7))
}

#[test]
fn sha256_single_block_has_no_tree() {
    let geo = check(Case::new("sha256-1", "sha256", 1, (4096, 4096)).salt("00112233"));
    assert_eq!((geo.levels(), geo.hash_blocks()), (0, 0));
}

#[test]
fn sha256_two_blocks() {
    let geo = check(Case::new("sha256-2", "sha256", 1, (4096, 4096)).blocks(2));
    assert_eq!((geo.levels(), geo.hash_blocks()), (1, 1));
}

#[test]
fn sha256_two_levels() {
    // 128 digests per hash block: 129 blocks need a second level.
    let case = Case::new("sha256-129", "sha256", 1, (4096, 4096));
    let geo = check(case.blocks(129).salt(&long_salt()));
    assert_eq!(geo.levels(), 2);
}

#[test]
fn sha256_three_levels_small_data_blocks() {
    let case = Case::new("sha256-3l", "sha256", 1, (512, 4096));
    let geo = check(case.blocks(128 * 128 + 1).layout(Layout::Bare));
    assert_eq!(geo.levels(), 3);
}

#[test]
fn sha256_small_hash_blocks_empty_salt() {
    // 16 digests per 512-byte hash block.
    let case = Case::new("sha256-512", "sha256", 1, (512, 512));
    let geo = check(case.blocks(3000).salt(""));
    assert_eq!(geo.levels(), 3);
}

#[test]
fn sha256_exact_powers_of_hashes_per_block() {
    let case = Case::new("sha256-256", "sha256", 1, (1024, 512));
    assert_eq!(check(case.blocks(256).salt("ab")).levels(), 2);
    let case = Case::new("sha256-4096", "sha256", 1, (512, 512));
    assert_eq!(check(case.blocks(4096).layout(Layout::Bare)).levels(), 3);
}

#[test]
fn sha1_version1_pads_digests() {
    let case = Case::new("sha1-v1", "sha1", 1, (4096, 4096));
    check(case.blocks(300).salt("0102030405"));
}

#[test]
fn sha1_version0_packs_digests() {
    let case = Case::new("sha1-v0", "sha1", 0, (1024, 4096));
    check(case.blocks(300).salt("cafe").layout(Layout::Bare));
    let case = Case::new("sha1-v0-512", "sha1", 0, (512, 512));
    check(case.blocks(1000).salt(&long_salt()));
}

#[test]
fn sha512_long_salt() {
    let case = Case::new("sha512-v1", "sha512", 1, (4096, 1024));
    check(case.blocks(200).salt(&long_salt()));
}

#[test]
fn sha512_version0_three_levels() {
    // 8 digests per 512-byte hash block.
    let case = Case::new("sha512-v0", "sha512", 0, (512, 512));
    assert_eq!(check(case.blocks(100).layout(Layout::Bare)).levels(), 3);
}

#[test]
fn same_file_with_superblock() {
    // The superblock right after the data: the tree starts at the next hash block.
    let layout = Layout::SameFile {
        hash_offset: 100 * 4096,
        superblock: true,
    };
    let case = Case::new("same-sb", "sha256", 1, (4096, 4096));
    assert_eq!(
        check(case.blocks(100).salt("11").layout(layout)).hash_start(),
        101
    );
    // A superblock well past the data, in a hash block of its own size.
    let layout = Layout::SameFile {
        hash_offset: 1 << 20,
        superblock: true,
    };
    let case = Case::new("same-sb-far", "sha1", 0, (4096, 512));
    assert_eq!(check(case.blocks(50).layout(layout)).hash_start(), 2049);
}

#[test]
fn same_file_without_superblock() {
    let layout = Layout::SameFile {
        hash_offset: 333 * 1024,
        superblock: false,
    };
    let case = Case::new("same-bare", "sha256", 1, (1024, 512));
    assert_eq!(check(case.blocks(333).layout(layout)).hash_start(), 666);
}

#[test]
fn trailing_data_is_not_covered() {
    let case = Case::new("trailing", "sha256", 1, (4096, 4096));
    check(case.blocks(10).trailing(1000));
}

#[test]
fn corruption_is_found_where_dm_verity_looks() {
    let case = Case::new("corrupt", "sha256", 1, (512, 512))
        .blocks(300)
        .salt("5a");
    let img = make_image(&case);
    let mut d = digest(case.algorithm);
    let geo = Geometry::new(1, 512, 512, 300, img.hash_start, d.size()).unwrap();
    assert_eq!(geo.levels(), 3);
    let salt = case.salt_bytes();
    let n = 123;
    let mut block = img.data[n as usize * 512..][..512].to_vec();
    let verify = |d: &mut dyn Digest, hash: &[u8], block: &[u8]| {
        verify_block(&geo, d, &salt, &img.root, hash, block, n)
    };
    assert_eq!(verify(&mut *d, &img.hash, &block), Ok(()));
    block[17] ^= 1;
    assert_eq!(verify(&mut *d, &img.hash, &block), Err(None));
    block[17] ^= 1;
    // Flip one byte of the level-1 hash block on the path: the level-1 check fails.
    let mut hash = img.hash.clone();
    let (hash_block, offset) = geo.digest_position(n, 1).unwrap();
    hash[hash_block as usize * 512 + offset] ^= 0x80;
    assert_eq!(verify(&mut *d, &hash, &block), Err(Some(1)));
}
