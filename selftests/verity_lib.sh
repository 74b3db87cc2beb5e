# SPDX-License-Identifier: GPL-2.0
# Helpers shared by verity.sh and verity_ipe.sh (source after lib.sh).
#
# Which implementation of the "verity" target is tested follows lib.sh's DM_RUST_IMPL (set by
# run_guest.sh --impl=..., i.e. `make check` or `make check-reference`), and nothing else:
#   rust    (default) dm_rust.ko loaded with upstream_names=1, so that it registers "verity". The
#           kernel's dm_verity is unloaded first, and the project's packaging/dm-rust.conf is put in
#           /etc/modprobe.d (the guest's /etc is a writable overlay): "options dm_rust
#           upstream_names=1" + "install dm_verity /sbin/modprobe dm_rust", which redirects
#           device-mapper's request_module("dm-verity") to dm_rust. dm_rust.ko is not in the module
#           index (depmod -a takes minutes under emulation), so a second file tells modprobe where
#           it is: "install dm_rust /sbin/modprobe dm-bufio && /sbin/insmod <ko> $CMDLINE_OPTS".
#   kernel  the kernel's own dm-verity (dm_verity.ko): the reference run, which validates the tests.
# verity_use_impl (before the first test) says which one runs; test_impl_selected checks it.
# Everything made here lives in $SCRATCH and every device is named rs_*, so that lib.sh's
# cleanup_devices removes it.

VERITY_IMPL=$DM_RUST_IMPL
VERITY_MODPROBE_CONF=/etc/modprobe.d/dm-rust.conf
VERITY_MODPROBE_LOCATION=/etc/modprobe.d/dm-rust-selftest-location.conf
VERITY_PACKAGING_CONF=${VERITY_PACKAGING_CONF:-/dm-rust/packaging/dm-rust.conf}
OVMF_CERT=${OVMF_CERT:-/dm-rust/build/ovmf/cert.pem}
OVMF_KEY=${OVMF_KEY:-/dm-rust/build/ovmf/key.pem}

module_loaded() { grep -q "^$1 " /proc/modules; }
verity_registered() { dmsetup targets | grep -q '^verity '; }

# Makes the "verity" target the one of $VERITY_IMPL. Prints what it did, as KTAP comments; returns
# non-zero if that is not possible (the tests then fail: impl_selected says why).
verity_use_impl() {
	modprobe dm-mod
	modprobe loop 2>/dev/null || true
	echo "# verity implementation: $VERITY_IMPL"
	case $VERITY_IMPL in
	kernel)
		rm -f "$VERITY_MODPROBE_CONF" "$VERITY_MODPROBE_LOCATION"
		if module_loaded dm_rust && ! module_loaded dm_verity && verity_registered; then
			rmmod dm_rust || { echo "# dm_rust (upstream names) is loaded and busy"; return 1; }
		fi
		modprobe dm_verity || { echo "# modprobe dm_verity failed"; return 1; }
		;;
	rust)
		if module_loaded dm_verity; then
			rmmod dm_verity || { echo "# the kernel's dm_verity is loaded and busy"; return 1; }
		fi
		if [ -s "$VERITY_PACKAGING_CONF" ]; then
			cp "$VERITY_PACKAGING_CONF" "$VERITY_MODPROBE_CONF"
		else
			printf '%s\n' "options dm_rust upstream_names=1" "install dm_verity /sbin/modprobe dm_rust" \
				>"$VERITY_MODPROBE_CONF"
		fi
		# shellcheck disable=SC2016 # $CMDLINE_OPTS is for modprobe to expand
		printf 'install dm_rust /sbin/modprobe dm-bufio && /sbin/insmod %s $CMDLINE_OPTS\n' "$DM_RUST_KO" \
			>"$VERITY_MODPROBE_LOCATION"
		cat "$VERITY_MODPROBE_CONF" "$VERITY_MODPROBE_LOCATION" | grep -v '^#' | sed 's/^/# modprobe.d: /'
		# Loaded earlier without upstream names (module.sh, linear_rs.sh): reload it.
		if module_loaded dm_rust && ! verity_registered; then
			rmmod dm_rust || { echo "# dm_rust is loaded without upstream names and busy"; return 1; }
		fi
		# What device-mapper's request_module("dm-verity") does.
		modprobe dm-verity || { echo "# modprobe dm-verity (redirected to dm_rust) failed"; return 1; }
		;;
	*)
		echo "# unknown VERITY_IMPL '$VERITY_IMPL' (rust or kernel)"
		return 1
		;;
	esac
	verity_registered || { echo "# no verity target registered"; return 1; }
}

# Undoes verity_use_impl, so that later scripts load dm_rust as they expect.
verity_restore_impl() {
	case $VERITY_IMPL in
	kernel) rmmod dm_verity 2>/dev/null || true ;;
	rust)
		rm -f "$VERITY_MODPROBE_CONF" "$VERITY_MODPROBE_LOCATION"
		rmmod dm_rust 2>/dev/null || true
		;;
	esac
}

# A test: the target in use is the one asked for.
test_impl_selected() {
	verity_registered || fail "no verity target: $(dmsetup targets | tr '\n' ' ')"
	dmsetup targets | grep '^verity '
	case $VERITY_IMPL in
	kernel)
		module_loaded dm_verity || fail "the kernel's dm_verity is not loaded"
		;;
	rust)
		module_loaded dm_verity && fail "the kernel's dm_verity is loaded: it provides verity, not dm_rust"
		module_loaded dm_rust || fail "dm_rust is not loaded"
		# device-mapper's request_module would land on dm_rust too.
		# (packaging/dm-rust.conf aliases dm_verity to dm_rust: modprobe resolves the name to it.)
		modprobe -R dm-verity 2>&1 | grep -qx 'dm_rust' ||
			fail "modprobe dm-verity does not go to dm_rust: $(modprobe -R dm-verity 2>&1 | tr '\n' ' ')"
		;;
	*)
		fail "unknown VERITY_IMPL '$VERITY_IMPL'"
		;;
	esac
}

# scratch <name>: path of a new empty file in $SCRATCH (removed by cleanup_devices).
scratch() {
	mktemp "$SCRATCH/loop.$1.XXXXXX"
}

# data_file <KiB> [zero block ranges "a-b" of 4 KiB blocks...]: random data; prints its path.
data_file() {
	local f r
	f=$(scratch data)
	head -c $(($1 * 1024)) /dev/urandom >"$f"
	shift
	for r in "$@"; do
		dd if=/dev/zero of="$f" bs=4096 seek="${r%-*}" count=$((${r#*-} - ${r%-*} + 1)) \
			conv=notrunc status=none
	done
	echo "$f"
}

# ro_loop <file>: a read-only loop device over the file; prints its path.
ro_loop() {
	losetup -r -f --show "$1"
}

majmin() {
	local v
	_read "/sys/class/block/$(block_name "$1")/dev" v && echo "$v"
}

# vformat <veritysetup format arguments...>: formats, keeps the output in $SCRATCH/format.out,
# prints the root hash.
vformat() {
	veritysetup format "$@" >"$SCRATCH/format.out" 2>&1 ||
		fail "veritysetup format $* failed: $(cat "$SCRATCH/format.out")"
	sed -n 's/^Root hash:[[:space:]]*//p' "$SCRATCH/format.out"
}

# format_field <name>: a field of the last vformat output ("Salt", "Hash blocks", ...).
format_field() {
	sed -n "s/^$1:[[:space:]]*//p" "$SCRATCH/format.out"
}

# table_field <device> <n>: the n-th word of the device's table line (1 = start sector).
table_field() {
	word "$2" "$(dmsetup table "$1")"
}

# status_char <device>: V (verified) or C (corruption detected), from the status line.
status_char() {
	word 4 "$(dmsetup status "$1")"
}

# expect_block <dev> <block size> <block> <reference file> [reference block]: a direct read of
# one block succeeds and equals the reference's block.
expect_block() {
	local dev=$1 bs=$2 blk=$3 ref=$4 rblk=${5:-$3}
	dd if="$dev" bs="$bs" skip="$blk" count=1 iflag=direct of="$SCRATCH/blk" status=none 2>"$SCRATCH/blk.err" ||
		fail "reading block $blk of $dev: $(cat "$SCRATCH/blk.err")"
	dd if="$ref" bs="$bs" skip="$rblk" count=1 status=none | cmp -s - "$SCRATCH/blk" ||
		fail "block $blk of $dev differs from block $rblk of $ref"
}

# expect_zero_block <dev> <block size> <block>
expect_zero_block() {
	dd if="$1" bs="$2" skip="$3" count=1 iflag=direct of="$SCRATCH/blk" status=none 2>"$SCRATCH/blk.err" ||
		fail "reading block $3 of $1: $(cat "$SCRATCH/blk.err")"
	head -c "$2" /dev/zero | cmp -s - "$SCRATCH/blk" || fail "block $3 of $1 is not all zeros"
}

# expect_eio <dev> <block size> <block>: a direct read of the block fails with EIO and returns
# no data at all.
expect_eio() {
	local dev=$1 bs=$2 blk=$3
	rm -f "$SCRATCH/blk"
	if dd if="$dev" bs="$bs" skip="$blk" count=1 iflag=direct of="$SCRATCH/blk" status=none 2>"$SCRATCH/blk.err"; then
		fail "block $blk of $dev was read without error"
	fi
	grep -q 'Input/output error' "$SCRATCH/blk.err" ||
		fail "block $blk of $dev: not EIO: $(cat "$SCRATCH/blk.err")"
	[ ! -s "$SCRATCH/blk" ] || fail "a failed read of block $blk of $dev returned $(stat -c %s "$SCRATCH/blk") bytes"
}

# corrupt_byte <file> <byte offset>: inverts one byte of the file (through the page cache that a
# loop device over the file reads from).
corrupt_byte() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1")
	b=${b//[[:space:]]/}
	[ -n "$b" ] || fail "no byte $2 in $1"
	printf "\\$(printf %03o $((b ^ 0xff)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# A mark in the kernel log; dmesg_since <mark> prints what came after it.
kmsg_mark() {
	local m="dm-rust selftest mark $RANDOM$RANDOM"
	echo "$m" >/dev/kmsg
	echo "$m"
}
dmesg_since() {
	dmesg | sed -n "/$1/,\$p"
}

# The test certificate (scripts/ovmf.sh) is in the .platform keyring: the guest was booted through
# OVMF with it in db. Skips the calling test otherwise.
need_platform_cert() {
	[ -r "$OVMF_CERT" ] && [ -r "$OVMF_KEY" ] ||
		skip "no test certificate at $OVMF_CERT (run scripts/ovmf.sh on the host)"
	local skid
	skid=$(openssl x509 -in "$OVMF_CERT" -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' :' | tr 'A-F' 'a-f')
	keyctl show %:.platform 2>/dev/null | grep -qi "$skid" ||
		skip "the test certificate is not in the .platform keyring: boot the guest through OVMF (VM_OVMF=1)"
}

# sign_roothash <root hash hex> <output> [key] [cert]: the detached PKCS#7 signature that
# veritysetup --root-hash-signature and root_hash_sig_key_desc take (over the hex string).
sign_roothash() {
	printf %s "$1" | openssl smime -sign -nocerts -noattr -binary -inkey "${3:-$OVMF_KEY}" \
		-signer "${4:-$OVMF_CERT}" -outform der -out "$2" ||
		fail "openssl smime -sign failed"
}

# untrusted_cert <prefix>: a fresh self-signed key (<prefix>.key) and certificate (<prefix>.pem)
# that no keyring trusts.
untrusted_cert() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=untrusted dm-rust test key" \
		-keyout "$1.key" -out "$1.pem" 2>/dev/null || fail "openssl req failed"
}

# vrun: run_test (which prints the time each test took).
vrun() { run_test "$@"; }

# A formatted image: data file ($data, $1 KiB, default 4 MiB), hash file ($hash), root hash ($root),
# salt ($salt), read-only loops over both ($dl, $hl); extra arguments go to veritysetup format.
setup_image() {
	local kib=${1:-4096}
	shift || true
	data=$(data_file "$kib")
	hash=$(scratch hash)
	root=$(vformat "$@" "$data" "$hash")
	salt=$(format_field Salt)
	dl=$(ro_loop "$data")
	hl=$(ro_loop "$hash")
}

# expect_ro_refused <expected message> <table>: like lib.sh's expect_table_refused, but with
# dmsetup create --readonly (dm-verity refuses every read-write table with "Device must be readonly").
expect_ro_refused() {
	local mark
	mark=$(kmsg_mark)
	if dmsetup create rs_bad --readonly --table "$2" 2>"$SCRATCH/err"; then
		dmsetup remove --retry rs_bad
		fail "table '$2' was accepted"
	fi
	! dm_exists rs_bad || fail "device rs_bad exists after a refused table"
	klog_has_since "$mark" "$1" ||
		fail "no '$1' in the kernel log for '$2': $(dmesg_since "$mark" | tail -n 3)"
	echo "refused: ...${2:60} -> $1"
}
