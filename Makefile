# SPDX-License-Identifier: GPL-2.0
#
# dm-rust. Everyday targets:
#   make            build dm_rust.ko in the lab (sets the lab up on first use)
#   make demo       set up, build, and run the demonstration in a guest
#   make check      host tests, then the selftests in a guest booting the lab's kernel (our targets)
#   make check-reference  the same selftests against the kernel's own C targets (validates the tests)
#   make bench      compare our targets with the kernel's in a guest (not a test)
#   make check-debug  every selftest on the lab's debug kernel (KASAN, lockdep, kmemleak...), then
#                   leak_check.sh; builds that kernel on first use (not part of `make check`)
#   make check-mutants  prove the selftests catch each deliberate bug of selftests/mutants/
#   make KDIR=...   build against any prepared Rust-enabled kernel tree, with the host's toolchain
#   make install    install build/dm_rust.ko for $(KREL) and the modprobe.d snippet (DESTDIR-aware)
#   make deb        the Debian packages (module for $(KREL), DKMS, source) in build/deb/
#   make check-packaging  lintian, the module package in a guest, the DKMS package in a clean chroot
# Kbuild builds the module itself (see Kbuild).

KREL ?= 7.3.4+deb13-amd64
export KREL

ifneq ($(KDIR),)
# A kernel tree given by the caller: a plain out-of-tree build.
all:
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules
clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean
else
all: module

lab:
	scripts/lab.sh setup

module: lab
	scripts/build.sh

clean:
	rm -rf build target
endif

install:
	install -D -m 0644 $(firstword $(wildcard build/dm_rust.ko dm_rust.ko)) $(DESTDIR)/lib/modules/$(KREL)/updates/dm_rust.ko
	install -D -m 0644 packaging/dm-rust.conf $(DESTDIR)/etc/modprobe.d/dm-rust.conf
	[ -n "$(DESTDIR)" ] || depmod -a $(KREL)

demo: module
	scripts/vm.sh scripts/demo.sh

host-test:
	scripts/host-test.sh

check: host-test module
	scripts/run-selftests.sh --impl=rust

check-reference: lab
	scripts/run-selftests.sh --impl=kernel

bench: module
	scripts/vm.sh bash -c 'scripts/bench.sh && scripts/bench-crypt.sh && scripts/bench-integrity.sh'

# The debug flavour of the lab's kernel, and dm_rust.ko built against it (build/debug/dm_rust.ko).
debug-module: lab
	FLAVOUR=debug scripts/lab.sh setup
	FLAVOUR=debug scripts/build.sh

check-debug: debug-module
	FLAVOUR=debug scripts/run-selftests.sh $(shell sed -n 's/^TEST_PROGS := //p' selftests/Makefile) leak_check.sh

deb: lab
	scripts/deb.sh

check-packaging: deb
	scripts/check-packaging.sh

.PHONY: all lab module clean install demo host-test check check-reference bench deb check-packaging debug-module check-debug
check-mutants: lab
	scripts/check-mutants.sh

.PHONY: all lab module clean install demo host-test check bench check-mutants
