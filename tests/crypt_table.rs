// SPDX-License-Identifier: GPL-2.0

//! The dm-crypt table line: what each cipher specification allocates, the lines written back,
//! and every refusal with dm-crypt's message, in dm-crypt's order.
//!
//! The kernel's part of the constructor (the crypto API, the keyring, the device lookup) is played
//! by [`Fake`], which knows a few algorithms as the crypto API describes them.

use std::ffi::CStr;

use dm_rust_pure::args::{ArgError, ArgResult, Args};
use dm_rust_pure::crypt::iv::IvMode;
use dm_rust_pure::crypt::table::{
    CipherInfo, CryptEnv, CryptTable, Key, KeyType, Refused, ShownKey,
};

/// Crypto API algorithms the fake kernel has: name, IV size, block size, accepted key sizes.
const ALGORITHMS: &[(&str, u32, u32, &[u32])] = &[
    ("xts(aes)", 16, 16, &[32, 48, 64]),
    ("xts(serpent)", 16, 16, &[32, 48, 64]),
    ("xts(twofish)", 16, 16, &[32, 48, 64]),
    ("cbc(aes)", 16, 16, &[16, 24, 32]),
    ("essiv(cbc(aes),sha256)", 16, 16, &[16, 24, 32]),
    ("ecb(aes)", 0, 16, &[16, 24, 32]),
    ("lrw(aes)", 16, 16, &[32, 40, 48]),
    ("cbc(des3_ede)", 8, 8, &[24]),
    ("ecb(cipher_null)", 0, 1, &[0]),
    ("cbc(cipher_null)", 0, 1, &[0]),
    ("xctr(aes)", 16, 1024, &[16, 32]),
];

/// The kernel side, with a log of what it was asked.
#[derive(Default)]
struct Fake {
    alg: Option<(&'static str, u32, u32, &'static [u32])>,
    count: u32,
    calls: Vec<String>,
}

impl CryptEnv for Fake {
    fn alloc_cipher(&mut self, name: &str, count: u32) -> Result<CipherInfo, Refused> {
        self.calls.push(format!("alloc {name} {count}"));
        let alg = *ALGORITHMS.iter().find(|a| a.0 == name).ok_or(Refused)?;
        self.alg = Some(alg);
        self.count = count;
        Ok(CipherInfo {
            iv_size: alg.1,
            block_size: alg.2,
        })
    }

    fn set_key(&mut self, key: &Key<'_>, size: u32) -> Result<(), Refused> {
        self.calls.push(format!("key {key:?} {size}"));
        if let Key::Keyring { description, .. } = key {
            if description.starts_with("missing") {
                return Err(Refused);
            }
        }
        // Each transform gets an equal part of the key.
        let alg = self.alg.ok_or(Refused)?;
        if size % self.count != 0 || !alg.3.contains(&(size / self.count)) {
            return Err(Refused);
        }
        Ok(())
    }

    fn get_device(&mut self, path: &[u8]) -> Result<(), Refused> {
        self.calls
            .push(format!("dev {}", String::from_utf8_lossy(path)));
        if path.starts_with(b"/dev/missing") {
            Err(Refused)
        } else {
            Ok(())
        }
    }
}

const K32: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const K64: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
                   202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

/// Target length used unless a test says otherwise: 1 MiB.
const LEN: u64 = 2048;

fn parse_len_env(line: &str, len: u64, env: &mut Fake) -> ArgResult<CryptTable<'static>> {
    let line: &'static str = String::from(line).leak();
    let argv: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
    CryptTable::parse(&Args::new(argv.leak()), len, env)
}

fn parse_len(line: &str, len: u64) -> ArgResult<CryptTable<'static>> {
    parse_len_env(line, len, &mut Fake::default())
}

fn parse(line: &str) -> CryptTable<'static> {
    parse_len(line, LEN).unwrap_or_else(|e| panic!("{line}: {:?}", e.0))
}

fn error(line: &str) -> &'static CStr {
    match parse_len(line, LEN) {
        Ok(_) => panic!("accepted: {line}"),
        Err(ArgError(msg)) => msg,
    }
}

fn hex_decode(hex: &[u8]) -> Vec<u8> {
    hex.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// The table line as dm-crypt writes it for a table loaded from `line`, naming the device `dev`.
fn table_line(t: &CryptTable<'_>, dev: &str) -> String {
    let bytes;
    let key = match t.key() {
        Key::Empty => ShownKey::Bytes(&[]),
        Key::Hex(hex) => {
            bytes = hex_decode(hex);
            ShownKey::Bytes(&bytes)
        }
        Key::Keyring {
            key_type,
            description,
        } => ShownKey::Keyring {
            size: t.key_size(),
            key_type,
            description,
        },
        Key::Random => ShownKey::Random { size: t.key_size() },
    };
    let mut out = String::new();
    t.write_table(&mut out, dev, key).unwrap();
    out
}

/// Parses `line`, writes it back naming the device as given: the same line.
fn round_trip(line: &str) {
    let t = parse(line);
    let dev = std::str::from_utf8(t.dev()).unwrap();
    assert_eq!(table_line(&t, dev), line);
}

#[test]
fn cipher_specifications() {
    // (spec, key, crypto API name, IV mode, IV options, key parts)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<IvMode>,
        Option<&'a str>,
        u32,
    );
    let cases: &[Case<'_>] = &[
        (
            "aes-xts-plain64",
            K64,
            "xts(aes)",
            Some(IvMode::Plain64),
            None,
            1,
        ),
        (
            "aes-xts-plain",
            K32,
            "xts(aes)",
            Some(IvMode::Plain),
            None,
            1,
        ),
        (
            "aes-xts-plain64be",
            K32,
            "xts(aes)",
            Some(IvMode::Plain64Be),
            None,
            1,
        ),
        (
            "aes-cbc-essiv:sha256",
            &K32[..32],
            "essiv(cbc(aes),sha256)",
            Some(IvMode::Essiv),
            Some("sha256"),
            1,
        ),
        (
            "aes-cbc-plain64",
            K32,
            "cbc(aes)",
            Some(IvMode::Plain64),
            None,
            1,
        ),
        ("aes-cbc-null", K32, "cbc(aes)", Some(IvMode::Null), None, 1),
        (
            "aes-lrw-benbi",
            K32,
            "lrw(aes)",
            Some(IvMode::Benbi),
            None,
            1,
        ),
        (
            "serpent-xts-plain64",
            K64,
            "xts(serpent)",
            Some(IvMode::Plain64),
            None,
            1,
        ),
        (
            "twofish-xts-plain64",
            K64,
            "xts(twofish)",
            Some(IvMode::Plain64),
            None,
            1,
        ),
        (
            "des3_ede-cbc-plain64",
            &K64[..48],
            "cbc(des3_ede)",
            Some(IvMode::Plain64),
            None,
            1,
        ),
        (
            "capi:xts(aes)-plain64",
            K64,
            "xts(aes)",
            Some(IvMode::Plain64),
            None,
            1,
        ),
        (
            "capi:cbc(aes)-essiv:sha256",
            K32,
            "essiv(cbc(aes),sha256)",
            Some(IvMode::Essiv),
            Some("sha256"),
            1,
        ),
        (
            "capi:xts(twofish)-plain",
            K32,
            "xts(twofish)",
            Some(IvMode::Plain),
            None,
            1,
        ),
        ("capi:ecb(aes)", K32, "ecb(aes)", None, None, 1),
        // Several keys: the key is split between as many transforms.
        (
            "aes:2-cbc-plain64",
            K64,
            "cbc(aes)",
            Some(IvMode::Plain64),
            None,
            2,
        ),
        (
            "aes:4-xts-plain64",
            &format!("{K64}{K64}"),
            "xts(aes)",
            Some(IvMode::Plain64),
            None,
            4,
        ),
        // The original format: a bare cipher, or cipher-plain, means cbc-plain.
        ("aes", K32, "cbc(aes)", Some(IvMode::Plain), None, 1),
        ("aes-plain", K32, "cbc(aes)", Some(IvMode::Plain), None, 1),
        ("aes-ecb", K32, "ecb(aes)", None, None, 1),
        ("cipher_null-ecb", "-", "ecb(cipher_null)", None, None, 1),
    ];
    for &(spec, key, api, mode, opts, parts) in cases {
        let mut env = Fake::default();
        let line = format!("{spec} {key} 0 /dev/sda 0");
        let t = parse_len_env(&line, LEN, &mut env).unwrap_or_else(|e| panic!("{line}: {:?}", e.0));
        assert_eq!(t.cipher_api(), api, "{spec}");
        assert_eq!(env.calls[0], format!("alloc {api} {parts}"), "{spec}");
        assert_eq!(
            (t.iv_mode(), t.iv_opts(), t.key_parts()),
            (mode, opts, parts),
            "{spec}"
        );
        assert_eq!(t.cipher_string(), spec);
        assert_eq!(
            t.key_size() as usize,
            if key == "-" { 0 } else { key.len() / 2 }
        );
        assert!(!t.iv_mode_ignored(), "{spec}");
    }
    // An IV mode for a cipher without IVs is dropped (dm-crypt only warns).
    let t = parse(&format!("aes-ecb-plain64 {K32} 0 /dev/sda 0"));
    assert_eq!(
        (t.cipher_api(), t.iv_mode(), t.iv_mode_ignored()),
        ("ecb(aes)", None, true)
    );
    let t = parse("capi:ecb(cipher_null)-lmk - 0 /dev/sda 0");
    assert_eq!(
        (t.iv_mode(), t.iv_mode_ignored(), t.key_parts()),
        (None, true, 64)
    );
}

#[test]
fn fields_and_calls() {
    let mut env = Fake::default();
    let t = parse_len_env(
        &format!(
            "aes-xts-plain64 {} 4096 /dev/vdb 32768 9 Allow_Discards same_cpu_crypt high_priority \
             submit_from_crypt_cpus no_read_workqueue NO_WRITE_WORKQUEUE sector_size:4096 \
             iv_large_sectors integrity_key_size:16",
            K64.to_uppercase()
        ),
        LEN,
        &mut env,
    )
    .unwrap();
    assert_eq!(t.key(), Key::Hex(K64.to_uppercase().as_bytes()));
    assert_eq!(
        (t.iv_offset(), t.dev(), t.start()),
        (4096, &b"/dev/vdb"[..], 32768)
    );
    assert!(t.allow_discards() && t.same_cpu_crypt() && t.high_priority());
    assert!(t.submit_from_crypt_cpus() && t.no_read_workqueue() && t.no_write_workqueue());
    assert!(t.iv_large_sectors());
    assert_eq!(
        (t.sector_size(), t.integrity(), t.integrity_key_size()),
        (4096, None, Some(16))
    );
    assert_eq!(
        t.cipher_info(),
        CipherInfo {
            iv_size: 16,
            block_size: 16
        }
    );
    assert_eq!(
        env.calls,
        [
            "alloc xts(aes) 1".to_string(),
            format!("key Hex({:?}) 64", K64.to_uppercase().as_bytes()),
            "dev /dev/vdb".to_string(),
        ]
    );

    // A keyring key, as cryptsetup loads LUKS2 devices.
    let mut env = Fake::default();
    let t = parse_len_env(
        "aes-xts-plain64 :64:logon:cryptsetup:0b8a8e63-d0 0 /dev/vdb 32768",
        LEN,
        &mut env,
    )
    .unwrap();
    let keyring = Key::Keyring {
        key_type: KeyType::Logon,
        description: "cryptsetup:0b8a8e63-d0",
    };
    assert_eq!((t.key(), t.key_size()), (keyring, 64));
    assert_eq!(env.calls[1], format!("key {keyring:?} 64"));
    for (name, key_type) in [
        ("user", KeyType::User),
        ("encrypted", KeyType::Encrypted),
        ("trusted", KeyType::Trusted),
    ] {
        let t = parse(&format!("aes-xts-plain64 :32:{name}:k 0 /dev/vdb 0"));
        assert_eq!(
            t.key(),
            Key::Keyring {
                key_type,
                description: "k"
            }
        );
    }
    // The empty key reaches the kernel too, which sets a zero-length key.
    let mut env = Fake::default();
    parse_len_env("capi:ecb(cipher_null) - 0 /dev/vdb 0", LEN, &mut env).unwrap();
    assert_eq!(env.calls[1], "key Empty 0");

    let t = parse(&format!(
        "aes-cbc-essiv:sha256 {K32} 0 8:16 0 1 integrity:28:none"
    ));
    let i = t.integrity().unwrap();
    assert_eq!((i.tag_size, i.profile), (28, "none"));
}

#[test]
fn round_trips() {
    round_trip(&format!("aes-xts-plain64 {K64} 0 8:16 0"));
    round_trip(&format!(
        "aes-cbc-essiv:sha256 {K32} 7 253:1 18446744073709551615"
    ));
    round_trip("capi:ecb(cipher_null) - 0 7:0 0");
    round_trip("aes-xts-plain64 :64:logon:cryptsetup:0b8a8e63-d0 0 7:0 32768 1 sector_size:4096");
    round_trip("serpent-xts-plain64 :32:user:my:key:with:colons 8 7:0 1 2 sector_size:4096 iv_large_sectors");
    round_trip(&format!(
        "aes-xts-plain64 {K64} 0 7:0 0 6 allow_discards same_cpu_crypt high_priority \
         submit_from_crypt_cpus no_read_workqueue no_write_workqueue"
    ));
    round_trip(&format!(
        "capi:xts(aes)-plain64 {K64} 16 7:0 2048 9 allow_discards same_cpu_crypt \
         submit_from_crypt_cpus no_read_workqueue no_write_workqueue integrity:28:aead \
         sector_size:4096 iv_large_sectors integrity_key_size:32"
    ));
}

#[test]
fn canonical_output() {
    // Options come back lowercase, in dm-crypt's order, counted again; the key in lowercase hex;
    // sector_size:512 is the default and not shown; a repeated flag shows once.
    let t = parse(&format!(
        "aes-xts-plain64 {} 0 /dev/vdb 0 6 IV_LARGE_SECTORS sector_size:512 No_Read_Workqueue \
         allow_discards allow_discards Same_CPU_Crypt",
        K64.to_uppercase()
    ));
    assert_eq!(
        table_line(&t, "254:0"),
        format!(
            "aes-xts-plain64 {K64} 0 254:0 0 4 allow_discards same_cpu_crypt no_read_workqueue \
             iv_large_sectors"
        )
    );
    // An empty option group writes no count.
    let t = parse(&format!("aes-xts-plain64 {K64} 0 /dev/vdb 0 0"));
    assert_eq!(
        table_line(&t, "254:0"),
        format!("aes-xts-plain64 {K64} 0 254:0 0")
    );
    // An odd last hex digit is not part of the key (dm-crypt reads key_size = length / 2).
    let t = parse(&format!("aes-cbc-plain64 {K32}f 0 /dev/vdb 0"));
    assert_eq!((t.key(), t.key_size()), (Key::Hex(K32.as_bytes()), 32));
    assert_eq!(
        table_line(&t, "1:2"),
        format!("aes-cbc-plain64 {K32} 0 1:2 0")
    );
    // The kernel's sscanf wraps numbers; "%hu" keeps sector_size modulo 2^16.
    let t = parse(&format!(
        "aes-xts-plain64 {K64} 18446744073709551617 /dev/vdb 0 1 sector_size:66048"
    ));
    assert_eq!((t.iv_offset(), t.sector_size()), (1, 512));
    let t = parse("aes-xts-plain64 :4294967360:logon:k 0 /dev/vdb 0");
    assert_eq!(t.key_size(), 64);
    // After `key wipe` the key in memory is zeroes, and that is what is written.
    let mut out = String::new();
    parse(&format!("aes-xts-plain64 {K32} 0 /dev/vdb 0"))
        .write_table(&mut out, "7:0", ShownKey::Bytes(&[0; 32]))
        .unwrap();
    assert_eq!(out, format!("aes-xts-plain64 {} 0 7:0 0", "0".repeat(64)));
}

#[test]
fn status_and_ima() {
    let t = parse(&format!("aes-xts-plain64 {K64} 0 /dev/vdb 0"));
    let mut out = String::new();
    t.write_info(&mut out).unwrap();
    assert_eq!(out, "");
    t.write_ima(&mut out).unwrap();
    assert_eq!(
        out,
        ",allow_discards=n,same_cpu_crypt=n,high_priority=n,submit_from_crypt_cpus=n\
         ,no_read_workqueue=n,no_write_workqueue=n,iv_large_sectors=n\
         ,cipher_string=aes-xts-plain64,key_size=64,key_parts=1,key_extra_size=0,key_mac_size=0;"
    );
    let t = parse(&format!(
        "aes:2-cbc-essiv:sha256 {K64} 0 /dev/vdb 0 6 allow_discards no_write_workqueue \
         sector_size:4096 iv_large_sectors integrity:28:none integrity_key_size:20"
    ));
    out.clear();
    t.write_ima(&mut out).unwrap();
    assert_eq!(
        out,
        ",allow_discards=y,same_cpu_crypt=n,high_priority=n,submit_from_crypt_cpus=n\
         ,no_read_workqueue=n,no_write_workqueue=y,iv_large_sectors=y\
         ,integrity_tag_size=28,cipher_auth=none,sector_size=4096\
         ,cipher_string=aes:2-cbc-essiv:sha256,key_size=64,key_parts=2,key_extra_size=0,key_mac_size=20;"
    );
}

#[test]
fn refusals() {
    let x = format!("aes-xts-plain64 {K64}");
    let cases: &[(&CStr, &[&str])] = &[
        (
            c"Not enough arguments",
            &["aes-xts-plain64 - 0 /dev/vdb", "a b c d"],
        ),
        (
            c"Cannot parse key size",
            &[
                "aes-xts-plain64 :64 0 /dev/vdb 0",
                "aes-xts-plain64 :x:logon:k 0 /dev/vdb 0",
                "aes-xts-plain64 ::logon:k 0 /dev/vdb 0",
                "aes-xts-plain64 :64x:logon:k 0 /dev/vdb 0",
                "aes-xts-plain64 :-1:logon:k 0 /dev/vdb 0",
                "aes-xts-plain64 :2147483648:logon:k 0 /dev/vdb 0",
            ],
        ),
        (
            c"Invalid number of feature args",
            &[
                &format!("{x} 0 /dev/vdb 0 10 a b c d e f g h i j"),
                &format!("{x} 0 /dev/vdb 0 2 allow_discards"),
                &format!("{x} 0 /dev/vdb 0 x"),
                &format!("{x} 0 /dev/vdb 0 -1"),
            ],
        ),
        (
            c"Invalid feature arguments",
            &[
                &format!("{x} 0 /dev/vdb 0 1 bogus"),
                &format!("{x} 0 /dev/vdb 0 1 sector_size:4096x"),
                &format!("{x} 0 /dev/vdb 0 1 sector_size:"),
                &format!("{x} 0 /dev/vdb 0 1 Sector_Size:4096"),
                &format!("{x} 0 /dev/vdb 0 1 integrity:"),
                &format!("{x} 0 /dev/vdb 0 1 integrity_key_size:8x"),
            ],
        ),
        (
            c"Invalid feature value for sector_size",
            &[
                &format!("{x} 0 /dev/vdb 0 1 sector_size:256"),
                &format!("{x} 0 /dev/vdb 0 1 sector_size:8192"),
                &format!("{x} 0 /dev/vdb 0 1 sector_size:1536"),
                &format!("{x} 0 /dev/vdb 0 1 sector_size:0"),
            ],
        ),
        (
            c"Invalid integrity arguments",
            &[
                &format!("{x} 0 /dev/vdb 0 1 integrity:0:aead"),
                &format!("{x} 0 /dev/vdb 0 1 integrity:481:aead"),
                // dm-crypt dereferences a missing profile; refused here.
                &format!("{x} 0 /dev/vdb 0 1 integrity:32"),
            ],
        ),
        (
            c"Unknown integrity profile",
            &[
                &format!("{x} 0 /dev/vdb 0 1 integrity:32:hmac(sha256)"),
                &format!("{x} 0 /dev/vdb 0 1 integrity:32:"),
            ],
        ),
        (
            c"Invalid integrity_key_size argument",
            &[&format!("{x} 0 /dev/vdb 0 1 integrity_key_size:0")],
        ),
        (
            c"Bad cipher specification",
            &[
                &format!("xts(aes)-plain64 {K64} 0 /dev/vdb 0"),
                &format!("aes-xts-plain64 {K64} 0 /dev/vdb 0 1 integrity:16:aead"),
            ],
        ),
        (
            c"Bad cipher key count specification",
            &[
                &format!("aes:3-xts-plain64 {K64} 0 /dev/vdb 0"),
                &format!("aes:0-xts-plain64 {K64} 0 /dev/vdb 0"),
                &format!("aes:-xts-plain64 {K64} 0 /dev/vdb 0"),
                &format!("aes:2x-xts-plain64 {K64} 0 /dev/vdb 0"),
            ],
        ),
        (
            c"IV mechanism required",
            &[&format!("aes-xts {K64} 0 /dev/vdb 0")],
        ),
        (
            c"Digest algorithm missing for ESSIV mode",
            &[
                &format!("aes-cbc-essiv {K32} 0 /dev/vdb 0"),
                &format!("capi:cbc(aes)-essiv {K32} 0 /dev/vdb 0"),
            ],
        ),
        (
            c"Cannot allocate cipher strings",
            &[&format!(
                "{}-cbc-plain64 {K32} 0 /dev/vdb 0",
                "a".repeat(123)
            )],
        ),
        (
            c"Cannot allocate cipher string",
            &[&format!(
                "capi:cbc({})-essiv:sha256 {K32} 0 /dev/vdb 0",
                "a".repeat(110)
            )],
        ),
        (
            c"Invalid AEAD cipher spec",
            &[&format!(
                "capi:authenc(hmac(sha256))-random {K64} 0 /dev/vdb 0 1 integrity:32:aead"
            )],
        ),
        (
            c"Error allocating crypto tfm",
            &[
                &format!("aes-xts-plain65 {K64} 0 /dev/vdb 0 1 sector_size:4096")
                    .replace("xts", "ctr"),
                &format!("nosuch-xts-plain64 {K64} 0 /dev/vdb 0"),
                &format!("capi:xts(nosuch)-plain64 {K64} 0 /dev/vdb 0"),
                &format!("capi:{}-plain64 {K64} 0 /dev/vdb 0", "x".repeat(200)),
                &format!("capi:-plain64 {K64} 0 /dev/vdb 0"),
            ],
        ),
        (
            c"Invalid IV mode",
            &[
                &format!("aes-xts-plain65 {K64} 0 /dev/vdb 0"),
                &format!("aes-xts-PLAIN64 {K64} 0 /dev/vdb 0"),
                &format!("aes-xts- {K64} 0 /dev/vdb 0"),
                &format!("aes-xts-plain64-x {K64} 0 /dev/vdb 0"),
            ],
        ),
        (
            c"IV mode lmk is not supported",
            &[&format!(
                "aes:64-cbc-lmk {} 0 /dev/vdb 0",
                "00".repeat(64 * 16)
            )],
        ),
        (
            c"IV mode tcw is not supported",
            &[&format!("aes-cbc-tcw {K32} 0 /dev/vdb 0")],
        ),
        (
            c"IV mode random is not supported",
            &[&format!("capi:xts(aes)-random {K64} 0 /dev/vdb 0")],
        ),
        (
            c"IV mode eboiv is not supported",
            &[&format!("aes-cbc-eboiv {K32} 0 /dev/vdb 0")],
        ),
        (
            c"IV mode elephant is not supported",
            &[&format!("aes-cbc-elephant {K64} 0 /dev/vdb 0")],
        ),
        (
            c"Error decoding and setting key",
            &[
                // Wrong sizes for the cipher.
                &format!("aes-xts-plain64 {} 0 /dev/vdb 0", &K64[..40]),
                "aes-xts-plain64 - 0 /dev/vdb 0",
                "aes-xts-plain64 :20:logon:k 0 /dev/vdb 0",
                // Not hex, no key but not "-".
                &format!("aes-xts-plain64 {}x 0 /dev/vdb 0", &K64[..63]),
                "aes-xts-plain64 a 0 /dev/vdb 0",
                "aes-xts-plain64 -- 0 /dev/vdb 0",
                // Keyring keys: missing, unknown type, no description, size 0.
                "aes-xts-plain64 :64:logon:missing 0 /dev/vdb 0",
                "aes-xts-plain64 :64:ssh:k 0 /dev/vdb 0",
                "aes-xts-plain64 :64:Logon:k 0 /dev/vdb 0",
                "aes-xts-plain64 :64:logon: 0 /dev/vdb 0",
                "aes-xts-plain64 :64:logon 0 /dev/vdb 0",
                "aes-xts-plain64 :64::k 0 /dev/vdb 0",
                "capi:ecb(cipher_null) :0:logon:k 0 /dev/vdb 0",
            ],
        ),
        (
            c"Error creating IV",
            &[&format!("capi:xctr(aes)-benbi {K32} 0 /dev/vdb 0")],
        ),
        (
            c"Invalid iv_offset sector",
            &[
                &format!("{x} x /dev/vdb 0"),
                &format!("{x} -1 /dev/vdb 0"),
                &format!("{x} 1x /dev/vdb 0"),
                &format!("{x} 4 /dev/vdb 0 1 sector_size:4096"),
            ],
        ),
        (c"Device lookup failed", &[&format!("{x} 0 /dev/missing 0")]),
        (
            c"Invalid device sector",
            &[&format!("{x} 0 /dev/vdb x"), &format!("{x} 0 /dev/vdb -0")],
        ),
    ];
    for (want, lines) in cases {
        for line in *lines {
            assert_eq!(error(line), *want, "{line}");
        }
    }
    // The target length must be a whole number of encryption sectors.
    assert_eq!(
        parse_len(&format!("{x} 0 /dev/vdb 0 1 sector_size:4096"), 2047).err(),
        Some(ArgError(
            c"Device size is not multiple of sector_size feature"
        ))
    );
    assert!(parse_len(&format!("{x} 8 /dev/vdb 0 1 sector_size:4096"), 8).is_ok());
    // Not UTF-8: no such algorithm.
    let argv: [&[u8]; 5] = [
        b"aes-xts-plain\xff",
        K64.as_bytes(),
        b"0",
        b"/dev/vdb",
        b"0",
    ];
    let r = CryptTable::parse(&Args::new(&argv), LEN, &mut Fake::default());
    assert_eq!(r.err(), Some(ArgError(c"Error allocating crypto tfm")));
}

#[test]
fn refusal_order() {
    // dm-crypt's order: key size syntax, options, cipher, IV mode, key, iv_offset, device, start.
    let cases: &[(&CStr, &str)] = &[
        (
            c"Cannot parse key size",
            "bad(spec :x:logon:k x /dev/missing x 1 bogus",
        ),
        (
            c"Invalid feature arguments",
            "bad(spec - x /dev/missing x 1 bogus",
        ),
        (c"Bad cipher specification", "bad(spec - x /dev/missing x"),
        (
            c"Error allocating crypto tfm",
            "nosuch-xts-lmk zz x /dev/missing x",
        ),
        (c"Invalid IV mode", "aes-xts-bogus zz x /dev/missing x"),
        (
            c"IV mode lmk is not supported",
            "aes-xts-lmk - x /dev/missing x",
        ),
        (
            c"Error decoding and setting key",
            "aes-xts-plain64 - x /dev/missing x",
        ),
        (
            c"Invalid iv_offset sector",
            &format!("aes-xts-plain64 {K64} x /dev/missing x"),
        ),
        (
            c"Device lookup failed",
            &format!("aes-xts-plain64 {K64} 0 /dev/missing x"),
        ),
    ];
    for (want, line) in cases {
        assert_eq!(error(line), *want, "{line}");
    }
    // Nothing after a refusal reaches the kernel side.
    let mut env = Fake::default();
    assert!(parse_len_env("aes-xts-plain64 - 0 /dev/vdb 0", LEN, &mut env).is_err());
    assert_eq!(env.calls, ["alloc xts(aes) 1", "key Empty 0"]);
    // Arguments after the option group are ignored, as by dm-crypt.
    let t = parse(&format!(
        "aes-xts-plain64 {K64} 0 /dev/vdb 0 1 allow_discards trailing words"
    ));
    assert!(t.allow_discards());
}

#[test]
fn messages() {
    use dm_rust_pure::crypt::table::{Message, MessageError};
    let m = |words: &str, suspended: bool, size: u32| {
        let argv: Vec<&'static [u8]> = String::from(words)
            .leak()
            .split_whitespace()
            .map(str::as_bytes)
            .collect();
        Message::parse(&argv, suspended, size, false)
    };
    assert_eq!(m("key wipe", true, 64), Ok(Message::KeyWipe));
    assert_eq!(m("KEY Wipe", true, 64), Ok(Message::KeyWipe));
    assert_eq!(
        m(&format!("key set {K64}"), true, 64),
        Ok(Message::KeySet(Key::Hex(K64.as_bytes())))
    );
    assert_eq!(
        m("key set :64:logon:cryptsetup:x-d0", true, 64),
        Ok(Message::KeySet(Key::Keyring {
            key_type: KeyType::Logon,
            description: "cryptsetup:x-d0"
        }))
    );
    assert_eq!(m("key set -", true, 0), Ok(Message::KeySet(Key::Empty)));
    // The key size may not change; the key must parse.
    assert_eq!(
        m(&format!("key set {K32}"), true, 64),
        Err(MessageError::BadKey)
    );
    assert_eq!(
        m("key set :32:logon:k", true, 64),
        Err(MessageError::BadKey)
    );
    assert_eq!(m("key set :x:logon:k", true, 64), Err(MessageError::BadKey));
    assert_eq!(
        m(&format!("key set {}", "zz".repeat(64)), true, 64),
        Err(MessageError::BadKey)
    );
    // Key messages need a suspended device; that is checked first.
    assert_eq!(m("key wipe", false, 64), Err(MessageError::NotSuspended));
    assert_eq!(m("key bogus", false, 64), Err(MessageError::NotSuspended));
    for bad in [
        "key",
        "",
        "wipe key",
        "key wipe now",
        "key set",
        "key bogus",
        "keys wipe",
    ] {
        assert_eq!(m(bad, true, 64), Err(MessageError::Unrecognised), "{bad}");
    }
}

/// `:<bytes>:random`: a key the kernel generates. The form, its sizes, the lines written back
/// (never key bytes), the messages.
#[test]
fn random_key() {
    // Accepted: the size is the key's, the kernel is asked to set a key of that size.
    let mut env = Fake::default();
    let t = parse_len_env("aes-xts-plain64 :64:random 0 /dev/vdb 0", LEN, &mut env).unwrap();
    assert_eq!((t.key(), t.key_size()), (Key::Random, 64));
    assert_eq!(env.calls[1], "key Random 64");
    for (line, size) in [
        ("aes-cbc-essiv:sha256 :32:random 0 /dev/vdb 0", 32),
        ("aes-xts-plain64 :032:random 0 /dev/vdb 0", 32),
        ("capi:xts(aes)-plain64 :48:random 8 /dev/vdb 0 1 sector_size:4096", 48),
    ] {
        let t = parse(line);
        assert_eq!((t.key(), t.key_size()), (Key::Random, size), "{line}");
    }
    // Written back as given, never with key bytes; IMA names the size only.
    round_trip("aes-xts-plain64 :64:random 0 7:0 0");
    round_trip("aes-xts-plain64 :64:random 16 253:3 2048 2 allow_discards sector_size:4096");
    let t = parse("aes-xts-plain64 :64:random 0 /dev/vdb 0");
    let mut out = String::new();
    t.write_table(&mut out, "7:0", ShownKey::Random { size: 64 })
        .unwrap();
    assert_eq!(out, "aes-xts-plain64 :64:random 0 7:0 0");
    out.clear();
    t.write_ima(&mut out).unwrap();
    assert!(out.ends_with(",cipher_string=aes-xts-plain64,key_size=64,key_parts=1,key_extra_size=0,key_mac_size=0;"));

    // Refused sizes and forms, each with a message saying what is wrong.
    for line in [
        "aes-xts-plain64 :0:random 0 /dev/vdb 0",
        "aes-xts-plain64 :513:random 0 /dev/vdb 0",
        "aes-xts-plain64 :1000:random 0 /dev/vdb 0",
        // Would wrap to 64 in sscanf's reading (as a keyring key's size does): not here.
        "aes-xts-plain64 :4294967360:random 0 /dev/vdb 0",
        "aes-xts-plain64 :0064:random 0 /dev/vdb 0",
    ] {
        assert_eq!(error(line), c"Invalid random key size (1 to 512 bytes)", "{line}");
    }
    for line in [
        "aes-xts-plain64 :64:random:x 0 /dev/vdb 0",
        "aes-xts-plain64 :64:random: 0 /dev/vdb 0",
    ] {
        assert_eq!(error(line), c"Invalid random key (the form is :<bytes>:random)", "{line}");
    }
    // The size's syntax is checked first, as for keyring keys; other spellings are not random.
    assert_eq!(
        error("aes-xts-plain64 :x:random 0 /dev/vdb 0"),
        c"Cannot parse key size"
    );
    assert_eq!(
        error("aes-xts-plain64 :-1:random 0 /dev/vdb 0"),
        c"Cannot parse key size"
    );
    for line in [
        "aes-xts-plain64 :64:Random 0 /dev/vdb 0",
        "aes-xts-plain64 :64:randomx 0 /dev/vdb 0",
        "aes-xts-plain64 :64:rand 0 /dev/vdb 0",
        // A size the cipher does not take (the kernel side says so more precisely).
        "aes-xts-plain64 :16:random 0 /dev/vdb 0",
    ] {
        assert_eq!(error(line), c"Error decoding and setting key", "{line}");
    }
    // In dm-crypt's order: the key step comes after the IV mode, before iv_offset.
    assert_eq!(error("aes-xts-bogus :0:random x /dev/missing x"), c"Invalid IV mode");
    assert_eq!(
        error("aes-xts-plain64 :0:random x /dev/missing x"),
        c"Invalid random key size (1 to 512 bytes)"
    );
}

#[test]
fn random_key_messages() {
    use dm_rust_pure::crypt::table::{Message, MessageError};
    let m = |words: &str, suspended: bool, random: bool| {
        let argv: Vec<&'static [u8]> = String::from(words)
            .leak()
            .split_whitespace()
            .map(str::as_bytes)
            .collect();
        Message::parse(&argv, suspended, 64, random)
    };
    // A device with a random key: `key wipe` works, `key set` of any key is refused.
    assert_eq!(m("key wipe", true, true), Ok(Message::KeyWipe));
    for key in [K64, ":64:logon:k", ":64:random", "-"] {
        assert_eq!(
            m(&format!("key set {key}"), true, true),
            Err(MessageError::RandomKey),
            "{key}"
        );
    }
    // Still only while suspended, checked first, as every key message.
    assert_eq!(
        m(&format!("key set {K64}"), false, true),
        Err(MessageError::NotSuspended)
    );
    assert_eq!(m("key wipe", false, true), Err(MessageError::NotSuspended));
    // Another device cannot take a random key by `key set`.
    assert_eq!(m("key set :64:random", true, false), Err(MessageError::BadKey));
    assert_eq!(
        m(&format!("key set {K64}"), true, false),
        Ok(Message::KeySet(Key::Hex(K64.as_bytes())))
    );
}
