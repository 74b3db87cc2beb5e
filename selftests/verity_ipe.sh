#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# IPE end to end on the "verity" target: two ext4 images with the same small executables, each on
# a verity device of its own root hash, mounted read-only; signed IPE policies that deny execution
# by root hash, then allow it by signed root hash. Needs the guest booted through OVMF with the test
# certificate in db (VM_OVMF=1, scripts/ovmf.sh): IPE only takes policies signed by a key of the
# secondary or platform keyring, and dm-verity checks root hash signatures against the same.
# DM_RUST_IMPL selects the verity target as in verity.sh (see verity_lib.sh).
#
# IPE keeps one policy active and cannot be switched off; a policy may only be replaced by one of
# a version at least as high, and an update needs a higher version. So every policy made here takes
# the next version from a counter above the version active when the script started, and each test
# ends by activating (creating or updating) the permissive policy "dmrust_allow" (DEFAULT
# action=ALLOW, the same as no policy) and deleting its own policies.
cd "$(dirname "$0")" && . ./lib.sh && . ./verity_lib.sh

IPE=/sys/kernel/security/ipe
VERSION_FILE=$SCRATCH/.ipe.version

# The next policy version: <major>.<n>.0, n counting up through the script's run.
next_version() {
	local major n
	read -r major n <"$VERSION_FILE"
	n=$((n + 1))
	echo "$major $n" >"$VERSION_FILE"
	echo "$major.$n.0"
}

# Version of the active policy as a number (0 if none).
active_version() {
	local p v
	for p in "$IPE"/policies/*; do
		[ -e "$p/active" ] && [ "$(cat "$p/active")" = 1 ] || continue
		v=$(cat "$p/version")
		echo "$v" | awk -F. '{print $1}'
		return
	done
	echo 0
}

# sign_policy <name> <rules file> <output>: the PKCS#7 signed policy, with a fresh version.
sign_policy() {
	local text
	text=$(scratch policy)
	{ echo "policy_name=$1 policy_version=$(next_version)"; cat "$2"; } >"$text"
	cat "$text" >&2
	openssl smime -sign -in "$text" -signer "$OVMF_CERT" -inkey "$OVMF_KEY" -noattr -nodetach -nosmimecap \
		-outform der -out "$3" || fail "openssl smime -sign of the policy failed"
}

# load_policy <name> <rules...>: deploys (or updates) and activates the policy.
load_policy() {
	local name=$1 rules signed
	shift
	rules=$(scratch rules)
	printf '%s\n' "$@" >"$rules"
	signed=$(scratch signed)
	sign_policy "$name" "$rules" "$signed"
	if [ -d "$IPE/policies/$name" ]; then
		cat "$signed" >"$IPE/policies/$name/update" || fail "updating policy $name failed"
	else
		cat "$signed" >"$IPE/new_policy" || fail "loading policy $name failed"
	fi
	echo 1 >"$IPE/policies/$name/active" || fail "activating policy $name failed"
	[ "$(cat "$IPE/policies/$name/active")" = 1 ] || fail "policy $name is not active"
}

# Makes the permissive policy active, then deletes the test policies.
ipe_cleanup() {
	local p
	[ -d "$IPE" ] && [ -s "$VERSION_FILE" ] || return 0
	for p in "$IPE"/policies/dmrust_ipe_*; do
		[ -d "$p" ] || continue
		[ "$(cat "$p/active")" = 1 ] && load_policy dmrust_allow "DEFAULT action=ALLOW" 2>/dev/null
		echo 1 >"$p/delete"
	done
	return 0
}

test_cleanup() {
	local m
	ipe_cleanup
	for m in "$SCRATCH"/loop.mnt.*; do
		mountpoint -q "$m" 2>/dev/null && umount "$m"
		rmdir "$m" 2>/dev/null || true
	done
	rm -rf "$SCRATCH"/loop.tree.*
	return 0
}

# make_tree <variant>: a directory with bin/true (a copy of /usr/bin/true), bin/hello (a #! script)
# and a file naming the variant.
make_tree() {
	local d
	d=$(mktemp -d "$SCRATCH/loop.tree.XXXXXX")
	mkdir "$d/bin"
	cp /usr/bin/true "$d/bin/true"
	printf '#!/bin/sh\necho hello from %s\n' "$1" >"$d/bin/hello"
	chmod 755 "$d/bin/true" "$d/bin/hello"
	echo "$1" >"$d/variant"
	echo "$d"
}

# open_image <variant> <device name> [signature]: an ext4 image (4 KiB blocks) of make_tree, formatted
# for verity, opened (with the root hash signature if given) and mounted read-only; sets
# img_<variant>, hash_<variant>, root_<variant>, mnt_<variant>.
make_image() {
	local v=$1 tree img hash root
	tree=$(make_tree "$v")
	img=$(scratch "img$v")
	rm -f "$img"
	mkfs.ext4 -q -b 4096 -L "ipe$v" -d "$tree" "$img" 8M || fail "mkfs.ext4 failed"
	hash=$(scratch "hash$v")
	root=$(vformat "$img" "$hash")
	eval "img_$v=\$img hash_$v=\$hash root_$v=\$root"
}

# mount_image <variant> <device> [signature file]
mount_image() {
	local v=$1 dev=$2 sig=${3:-} img hash root dl hl mnt
	eval "img=\$img_$v hash=\$hash_$v root=\$root_$v"
	dl=$(ro_loop "$img")
	hl=$(ro_loop "$hash")
	veritysetup open ${sig:+--root-hash-signature="$sig"} "$dl" "$dev" "$hl" "$root" ||
		fail "veritysetup open of image $v failed"
	mnt=$(mktemp -d "$SCRATCH/loop.mnt.XXXXXX")
	mount -o ro /dev/mapper/"$dev" "$mnt" || fail "mounting image $v failed"
	[ "$(cat "$mnt/variant")" = "$v" ] || fail "image $v: wrong content"
	eval "mnt_$v=\$mnt"
}

umount_image() {
	local v=$1 dev=$2 mnt
	eval "mnt=\$mnt_$v"
	umount "$mnt"
	veritysetup close "$dev"
}

# expect_runs <path>: exec'ing the file succeeds.
expect_runs() {
	"$1" >"$SCRATCH/exec.out" 2>&1 || fail "$1 did not run: $(cat "$SCRATCH/exec.out")"
	echo "runs: $1"
}

# expect_denied <path>: exec'ing the file fails with EACCES (the shell says Permission denied, 126).
expect_denied() {
	local rc=0
	"$1" >"$SCRATCH/exec.out" 2>&1 || rc=$?
	[ "$rc" = 126 ] && grep -q 'Permission denied' "$SCRATCH/exec.out" ||
		fail "$1: expected EACCES, got exit $rc: $(cat "$SCRATCH/exec.out")"
	echo "denied: $1"
}

need_ipe() {
	[ -d "$IPE" ] || skip "IPE is not active (no $IPE)"
	need_platform_cert
	[ -s "$VERSION_FILE" ] || echo "$(($(active_version) + 1)) 0" >"$VERSION_FILE"
}

# DENY by root hash: the executables of the denied device fail with EACCES (execve of a binary and
# of a #! script, and the loader's PROT_EXEC mmap), those of the other device and of the root file
# system run; reading is not executing. A policy update turns it around; an older version is
# refused with ESTALE. After a reload of a device with the other root hash, IPE judges by the new one.
test_roothash_deny() {
	need_ipe
	trap test_cleanup EXIT
	make_image A
	make_image B
	mount_image A rs_ipe_a
	mount_image B rs_ipe_b
	expect_runs "$mnt_A/bin/true"
	expect_runs "$mnt_B/bin/true"

	load_policy dmrust_ipe_rh "DEFAULT action=ALLOW" "op=EXECUTE dmverity_roothash=sha256:$root_A action=DENY"
	expect_denied "$mnt_A/bin/true"
	expect_denied "$mnt_A/bin/hello"
	expect_runs "$mnt_B/bin/true"
	expect_runs "$mnt_B/bin/hello"
	expect_runs /usr/bin/true
	# The dynamic loader maps the file with PROT_EXEC: refused too.
	local ld
	ld=$(readlink -f /lib64/ld-linux-x86-64.so.2)
	if "$ld" "$mnt_A/bin/true" >"$SCRATCH/exec.out" 2>&1; then
		fail "the loader ran $mnt_A/bin/true"
	fi
	echo "loader refused: $(head -n 1 "$SCRATCH/exec.out")"
	"$ld" "$mnt_B/bin/true" || fail "the loader did not run $mnt_B/bin/true"
	# Reading (sh reads the script) is not executing.
	[ "$(sh "$mnt_A/bin/hello")" = "hello from A" ] || fail "sh could not read the script of A"

	# A newer version denies B instead.
	load_policy dmrust_ipe_rh "DEFAULT action=ALLOW" "op=EXECUTE dmverity_roothash=sha256:$root_B action=DENY"
	expect_runs "$mnt_A/bin/true"
	expect_denied "$mnt_B/bin/true"
	# An update must have a higher version than the one in force.
	local rules signed
	rules=$(scratch rules)
	echo "DEFAULT action=ALLOW" >"$rules"
	signed=$(scratch signed)
	sign_policy dmrust_ipe_rh "$rules" "$signed"
	load_policy dmrust_ipe_rh "DEFAULT action=ALLOW" "op=EXECUTE dmverity_roothash=sha256:$root_B action=DENY"
	if cat "$signed" >"$IPE/policies/dmrust_ipe_rh/update" 2>"$SCRATCH/err"; then
		fail "an update with an older version was accepted"
	fi
	grep -q 'Stale file handle' "$SCRATCH/err" || fail "older update: not ESTALE: $(cat "$SCRATCH/err")"
	expect_denied "$mnt_B/bin/true"

	# The same device reloaded with the other image: IPE follows the root hash of the live table.
	umount "$mnt_A"
	dmsetup suspend rs_ipe_a
	dmsetup reload --readonly rs_ipe_a --table "$(dmsetup table rs_ipe_b)"
	dmsetup resume rs_ipe_a
	mount -o ro /dev/mapper/rs_ipe_a "$mnt_A"
	[ "$(cat "$mnt_A/variant")" = B ] || fail "rs_ipe_a does not show image B after the reload"
	expect_denied "$mnt_A/bin/true"
	umount "$mnt_A"
	dmsetup remove --retry rs_ipe_a
}

# A root hash signed by a trusted key (dmverity_signature=TRUE) allows what the root hash rules
# would deny: the same image runs when opened with the signature and is denied without it.
test_signature_allows() {
	local sig
	need_ipe
	trap test_cleanup EXIT
	make_image A
	make_image B
	sig=$(scratch sig)
	sign_roothash "$root_A" "$sig"
	mount_image A rs_ipe_a "$sig"
	mount_image B rs_ipe_b
	load_policy dmrust_ipe_sig "DEFAULT action=ALLOW" \
		"op=EXECUTE dmverity_signature=TRUE action=ALLOW" \
		"op=EXECUTE dmverity_roothash=sha256:$root_A action=DENY" \
		"op=EXECUTE dmverity_roothash=sha256:$root_B action=DENY"
	expect_runs "$mnt_A/bin/true"
	expect_runs "$mnt_A/bin/hello"
	expect_denied "$mnt_B/bin/true"
	expect_runs /usr/bin/true
	# The same image without the signature.
	umount_image A rs_ipe_a
	mount_image A rs_ipe_a
	expect_denied "$mnt_A/bin/true"
	expect_denied "$mnt_A/bin/hello"
	# And signed again.
	umount_image A rs_ipe_a
	mount_image A rs_ipe_a "$sig"
	expect_runs "$mnt_A/bin/true"
}

# Policies signed by an untrusted key, or not signed, are refused.
test_untrusted_policy_refused() {
	local untrusted rules text signed
	need_ipe
	trap test_cleanup EXIT
	untrusted=$(scratch untrusted)
	untrusted_cert "$untrusted"
	text=$(scratch policy)
	printf 'policy_name=dmrust_ipe_untrusted policy_version=%s\nDEFAULT action=DENY\n' "$(next_version)" >"$text"
	signed=$(scratch signed)
	openssl smime -sign -in "$text" -signer "$untrusted.pem" -inkey "$untrusted.key" -noattr -nodetach \
		-nosmimecap -outform der -out "$signed" || fail "openssl smime -sign failed"
	if cat "$signed" >"$IPE/new_policy" 2>"$SCRATCH/err"; then
		fail "a policy signed by an untrusted key was accepted"
	fi
	cat "$SCRATCH/err"
	grep -q 'Required key not available' "$SCRATCH/err" || fail "untrusted key: not ENOKEY: $(cat "$SCRATCH/err")"
	if cat "$text" >"$IPE/new_policy" 2>"$SCRATCH/err"; then
		fail "an unsigned policy was accepted"
	fi
	cat "$SCRATCH/err"
	[ ! -d "$IPE/policies/dmrust_ipe_untrusted" ] || fail "the refused policy is listed"
}

ktap_plan 4
if ! verity_use_impl; then
	echo "# could not select the verity implementation '$VERITY_IMPL'"
fi
vrun impl_selected test_impl_selected
vrun roothash_deny test_roothash_deny
vrun signature_allows test_signature_allows
vrun untrusted_policy_refused test_untrusted_policy_refused
verity_restore_impl
ktap_finish
