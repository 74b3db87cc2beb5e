#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
# fscrypt without fscrypt's tools (the guest has none): adds a 64-byte key to the file system of
# <dir> (FS_IOC_ADD_ENCRYPTION_KEY) and sets a v2 policy with it on the empty directory <dir>
# (FS_IOC_SET_ENCRYPTION_POLICY): contents AES-256-XTS, file names AES-256-CTS. Prints the key
# identifier. Layouts from include/uapi/linux/fscrypt.h.
#
# Usage: fscrypt_policy.py <dir> <key: 128 hex digits>
import fcntl
import os
import struct
import sys


def ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (ord("f") << 8) | nr


FS_IOC_ADD_ENCRYPTION_KEY = ioc(3, 23, 80)  # _IOWR('f', 23, struct fscrypt_add_key_arg)
FS_IOC_SET_ENCRYPTION_POLICY = ioc(2, 19, 12)  # _IOR('f', 19, struct fscrypt_policy_v1)
FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER = 2
FSCRYPT_MODE_AES_256_XTS = 1
FSCRYPT_MODE_AES_256_CTS = 4

directory, key = sys.argv[1], bytes.fromhex(sys.argv[2])
assert len(key) == 64, "the key must be 64 bytes"
fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
# struct fscrypt_add_key_arg: key_spec {type, reserved, u[32]}, raw_size, key_id, reserved[8], raw[]
arg = bytearray(struct.pack("=II32sII32s", FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, 0, b"", len(key), 0, b"") + key)
fcntl.ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg, True)
identifier = bytes(arg[8:24])
# struct fscrypt_policy_v2: version, contents mode, file names mode, flags, reserved[4], identifier[16]
policy = bytearray(struct.pack("=BBBB4s16s", 2, FSCRYPT_MODE_AES_256_XTS, FSCRYPT_MODE_AES_256_CTS, 0, b"", identifier))
fcntl.ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, policy, True)
os.close(fd)
print(identifier.hex())
