#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Reference ciphertext for the dm-crypt known-answer test (tests/crypt_kat.rs).

Encrypts stdin as dm-crypt lays it out on disk, written from dm-crypt's documentation
(Documentation/admin-guide/device-mapper/dm-crypt.rst) with OpenSSL doing the cipher work:
the `openssl` command for CBC and ESSIV, OpenSSL's XTS through python3-cryptography for XTS
(`openssl enc` has no XTS).

    crypt_reference.py <xts-plain64|xts-plain|xts-plain64be|cbc-plain64|cbc-essiv:sha256>
                       <key hex> <iv_offset> <sector_size> <iv_large_sectors 0|1> <first sector>

<first sector> is the target sector (512-byte units) the input starts at. Each encryption sector
gets its own IV from the sector number dm-crypt documents: the 512-byte sector counted from the
start of the target plus iv_offset, or with iv_large_sectors that number divided by
sector_size / 512.
"""

import hashlib
import subprocess
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def openssl(args, data):
    return subprocess.run(["openssl"] + args, input=data, stdout=subprocess.PIPE, check=True).stdout


def iv_for(ivmode, key, number):
    if ivmode == "plain64":
        return (number % 2**64).to_bytes(8, "little") + bytes(8)
    if ivmode == "plain":
        return (number % 2**32).to_bytes(4, "little") + bytes(12)
    if ivmode == "plain64be":
        return bytes(8) + (number % 2**64).to_bytes(8, "big")
    if ivmode == "essiv:sha256":
        salt = openssl(["dgst", "-sha256", "-binary"], key)
        assert salt == hashlib.sha256(key).digest()
        block = (number % 2**64).to_bytes(8, "little") + bytes(8)
        return openssl(["enc", "-aes-256-ecb", "-nopad", "-K", salt.hex()], block)
    raise SystemExit(f"unknown IV mode {ivmode}")


def main():
    spec, key_hex, iv_offset, sector_size, large, first = sys.argv[1:]
    chain, ivmode = spec.split("-", 1)
    key = bytes.fromhex(key_hex)
    iv_offset, sector_size, first = int(iv_offset), int(sector_size), int(first)
    data = sys.stdin.buffer.read()
    assert len(data) % sector_size == 0 and first % (sector_size // 512) == 0
    out = bytearray()
    for i in range(len(data) // sector_size):
        sector = first + i * (sector_size // 512) + iv_offset
        if large == "1":
            sector //= sector_size // 512
        iv = iv_for(ivmode, key, sector)
        block = data[i * sector_size:(i + 1) * sector_size]
        if chain == "xts":
            enc = Cipher(algorithms.AES(key), modes.XTS(iv)).encryptor()
            out += enc.update(block) + enc.finalize()
        elif chain == "cbc":
            out += openssl([
                "enc", f"-aes-{len(key) * 8}-cbc", "-nopad", "-K", key.hex(), "-iv", iv.hex()
            ], block)
        else:
            raise SystemExit(f"unknown chaining mode {chain}")
    sys.stdout.buffer.write(out)


main()
