#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The mutation check: proves that the selftests catch broken targets. Each patch in
# selftests/mutants/ is one small deliberate bug in rust/ (its header says what, and which
# selftest scripts should catch it). For each: apply it to a scratch copy of the sources, build
# that copy (scripts/build.sh there, with its own build directory in the lab). Then one guest runs
# the scripts of each mutant against its module in turn (scripts/mutants-guest.sh), stopping at
# the mutant's first failing test. A mutant is killed when a test fails, a script dies, or the
# kernel logs a WARNING/BUG/Oops or crashes (the guest is then booted again for the others).
# First the unmodified module runs every script any mutant names, and must pass: a kill only
# counts against a suite that is green on the real module.
#
# A mutant's "Tests:" line names the tests that should kill it: only those run (SELFTEST_ONLY in
# lib.sh), and the baseline runs their union when every mutant has one; MUTANTS_ALL_TESTS=1 runs
# the whole scripts instead.
#
# Usage: scripts/check-mutants.sh [mutant names or patch files...]   (default: all)
# Output: build/mutants/summary (killed/total and the killer of each), exit 0 only if all killed.
# Environment: MUTANTS_BASELINE=0 skips the baseline run (only to iterate on one mutant);
# MUTANTS_BASELINE_SCRIPTS=a.sh,b.sh limits the baseline run to those scripts; MUTANTS_BUILD_ONLY=1
# stops after building. Modules whose sources did not change are reused.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD
out=$top/build/mutants
scratch=$top/build/mutants/src

die() { printf 'check-mutants: %s\n' "$*" >&2; exit 1; }

patches=()
if [ $# -gt 0 ]; then
	for a in "$@"; do
		p=$a
		# The full name, its number ("32" is 32-..., not 03-...-32-bits), then any part of it.
		[ -f "$p" ] || p=selftests/mutants/$a.patch
		[ -f "$p" ] || p=$(ls selftests/mutants/"$a"-*.patch 2>/dev/null | head -n 1)
		[ -f "$p" ] || p=$(ls selftests/mutants/*"$a"*.patch 2>/dev/null | head -n 1)
		[ -f "$p" ] || die "no mutant '$a'"
		patches+=("$p")
	done
else
	patches=(selftests/mutants/*.patch)
fi
[ ${#patches[@]} -gt 0 ] || die "no mutants in selftests/mutants"

mkdir -p "$out"
rm -f "$out"/results "$out"/summary "$out"/current "$out"/guest.log "$out"/*.log
start=$(date +%s)
# A module is rebuilt only when its sources (the tree and the patch) changed.
srcsum() {
	{ sed '/^Tests: /d' "$@"; cat $(find Kbuild include rust -type f | sort); } | md5sum | cut -d' ' -f1
}

# The unmodified module, built from this checkout.
scripts/build.sh >"$out/build-baseline.log" 2>&1 || die "the unmodified module does not build (see $out/build-baseline.log)"
cp build/dm_rust.ko "$out/baseline.ko"

# Each mutant, built in a scratch copy.
list=()
for p in "${patches[@]}"; do
	name=$(basename "$p" .patch)
	scripts=$(sed -n 's/^Scripts: //p' "$p")
	[ -n "$scripts" ] || die "$name has no 'Scripts:' line"
	tests=$(sed -n 's/^Tests: //p' "$p")
	[ "${MUTANTS_ALL_TESTS:-0}" = 0 ] || tests=
	list+=("$name:${scripts// /,}${tests:+:${tests// /,}}")
	sum=$(srcsum "$p")
	if [ -f "$out/$name.ko" ] && [ "$(cat "$out/$name.sum" 2>/dev/null)" = "$sum" ]; then
		echo "check-mutants: $name already built"
		continue
	fi
	rm -rf "$scratch"
	mkdir -p "$scratch"
	cp -a Kbuild Makefile include rust scripts "$scratch/"
	patch -d "$scratch" -p1 --quiet --no-backup-if-mismatch <"$p" >"$out/$name.build.log" 2>&1 ||
		die "$name does not apply (see $out/$name.build.log)"
	# More tries: a build can fail for reasons of the shared lab (its /proc mount); a mutant that
	# does not compile fails them all.
	built=0
	for try in 1 2 3 4 5; do
		# Only dm_rust.ko: the test module comes from the unmodified build.
		if DM_RUST_TESTS= "$scratch/scripts/build.sh" >>"$out/$name.build.log" 2>&1; then built=1; break; fi
		sleep $((try * 5))
	done
	[ $built = 1 ] || die "$name does not build (see $out/$name.build.log): a mutant must compile"
	cp "$scratch/build/dm_rust.ko" "$out/$name.ko"
	echo "$sum" >"$out/$name.sum"
	echo "check-mutants: built $name ($scripts)"
done
rm -rf "$scratch"
[ "${MUTANTS_BUILD_ONLY:-0}" = 0 ] || exit 0

# The baseline runs the union of the scripts.
all=$(printf '%s\n' "${list[@]}" | cut -d: -f2 | tr ',' '\n' | awk '!seen[$0]++' | paste -sd, -)
all=${MUTANTS_BASELINE_SCRIPTS:-$all}
# ... and, if every mutant names its tests, only the union of those.
if ! printf '%s\n' "${list[@]}" | awk -F: 'NF < 3 { exit 1 }'; then
	:
elif [ -z "${MUTANTS_BASELINE_SCRIPTS:-}" ]; then
	all=$all:$(printf '%s\n' "${list[@]}" | cut -d: -f3 | tr ',' '\n' | awk '!seen[$0]++' | paste -sd, -)
fi
todo=()
[ "${MUTANTS_BASELINE:-1}" = 0 ] || todo+=("baseline:$all")
todo+=("${list[@]}")

# One guest for all of them; a guest that dies (a mutant crashed the kernel) is replaced by a new
# one for the mutants left, the one in progress counting as killed by the crash.
: >"$out/results"
boots=0
while :; do
	left=()
	for t in "${todo[@]}"; do
		grep -q "^${t%%:*} " "$out/results" || left+=("$t")
	done
	[ ${#left[@]} -gt 0 ] || break
	boots=$((boots + 1))
	[ $boots -le $((${#todo[@]} + 1)) ] || die "too many guest boots"
	rm -f "$out/current"
	printf '%s\n' "${left[@]}" >"$out/todo"
	VM_OVMF=${VM_OVMF:-1} timeout 7200 scripts/vm.sh scripts/mutants-guest.sh --list 2>&1 |
		tee -a "$out/guest.log"
	if [ -s "$out/current" ]; then
		cur=$(cat "$out/current")
		if ! grep -q "^$cur " "$out/results"; then
			echo "$cur killed: the guest died while running it (see $out/guest.log)" | tee -a "$out/results"
		fi
	elif [ ${#left[@]} -gt 0 ] && [ ! -s "$out/results" ]; then
		die "the guest produced no result (see $out/guest.log)"
	fi
done

if grep -q '^baseline ' "$out/results" && ! grep -q '^baseline passed' "$out/results"; then
	grep '^baseline ' "$out/results"
	die "the selftests fail on the unmodified module: no kill can be trusted"
fi
total=${#list[@]}
killed=$(grep -v '^baseline ' "$out/results" | grep -c ' killed')
{
	echo "mutation check $(date -u +%Y-%m-%d): $killed/$total mutants killed ($(($(date +%s) - start)) s, $boots guest boot(s))"
	grep -v '^baseline ' "$out/results" | sort
	grep '^baseline ' "$out/results" || true
} >"$out/summary"
cat "$out/summary"
[ "$killed" = "$total" ]
