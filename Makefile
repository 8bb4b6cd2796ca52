# Makefile — a thin wrapper over meson for the two commands of README.md.
#   make demo   install what is missing (as root), build, run `refit demo`
#   make test   install what is missing (as root), build, run every test,
#               then again under AddressSanitizer + UBSan; tests of suite
#               'slow' (600 s soaks, 1 GiB transfers per transport, the
#               emulated cluster) are left to `make test-slow`
#   make test-slow  build, then the 'slow' suite alone
#   make wheel  build, then dist/refit-*.whl: the Python package with
#               librefit and its plugins inside (bindings/python/build_wheel.py)
BUILD ?= build
ASAN_BUILD ?= build-asan
MESON_OPTS ?=
JOBS ?= $(shell nproc)
# Tests running at once: one per core. Most tests wait half their time
# (peers, timeouts, sleeps), so twice the cores would be faster, but under
# ASan at load 12 a forked publisher then outlived a 3 s refit.timeout
# (push_reconnects_after_a_reset): `make test TEST_JOBS=4` for the faster run.
TEST_JOBS ?= $(JOBS)

.PHONY: all deps build demo test test-slow test-asan wheel clean

all: build

deps:
	@tools/dev/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) -Dwerror=true $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD) -j $(JOBS)

demo: build
	@tools/dev/demo.sh $(BUILD)

test: build
	meson test -C $(BUILD) --print-errorlogs --num-processes $(TEST_JOBS) --no-suite slow
	@$(MAKE) --no-print-directory test-asan

# Benchmark-sized and long-running tests: minutes each, so not part of
# `make test` (CI's time limit); run them before a release or after
# touching transports, the soak paths or the simulator.
test-slow: build
	meson test -C $(BUILD) --print-errorlogs --num-processes 1 --suite slow

# The sanitizer configuration: every test but those marked 'slow'
# (benchmark-sized transfers), with the CUDA feature off (the CUDA runtime
# and ASan do not mix), at -O1 as ASan's documentation advises (about
# twice as fast as -O0, stack traces still exact).
$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
	  -Dcuda=disabled -Dbuildtype=debug -Doptimization=1 $(MESON_OPTS)

test-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  meson test -C $(ASAN_BUILD) --print-errorlogs --num-processes $(TEST_JOBS) --no-suite slow

wheel: build
	python3 bindings/python/build_wheel.py --build $(BUILD) --out dist

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
