# The entry points: `make demo`, `make test`, `make bench`. Each installs what it needs first.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: bootstrap demo test lint unit bench fuzz

bootstrap:
	@scripts/bootstrap

## Everything CI runs: format check, clippy with -D warnings, all tests.
test: bootstrap lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	scripts/test

## Build skiff and start the sandboxed cluster with the example app.
demo: bootstrap
	$(CARGO) build --release --locked -p skiff
	@echo "once ready, from another shell: curl -k --resolve hello.skiff.test:8443:127.0.0.1 https://hello.skiff.test:8443/"
	./target/release/skiff up -f examples/

## Criterion micro-benchmarks and end-to-end ones (pod startup, eBPF programming), then the
## side-by-side comparisons: cluster DNS vs Knot, ingress vs nginx and haproxy (each script
## installs its peers, measures with the release `skiff bench` and writes its fragment under
## benches/results/), then benches/report.sh assembles benches/RESULTS.md with the plots.
## The scripts get the binary built here (SKIFF=...), so every comparison measures the same build
## even if the tree changes during the run, and RESULTS.md names the commit it was built from
## (SKIFF_BENCH_COMMIT, taken when make starts), not whatever is checked out at the end.
## BENCH_QUICK=1: a shorter run for a busy or small machine: the end-to-end benchmarks at a tenth
## of their size (SKIFF_BENCH_QUICK), criterion's warm-up/measurement at 1 s/2 s
## (CRITERION_ARGS, any criterion flags), and the comparisons with fewer, shorter repetitions
## (still interleaved). Figures from it are noisier; RESULTS.md states the settings each used.
BENCH_QUICK ?=
CRITERION_ARGS ?= $(if $(BENCH_QUICK),--warm-up-time 1 --measurement-time 2)
DNS_BENCH_ENV ?= $(if $(BENCH_QUICK),REPS=2 DURATION=5)
INGRESS_BENCH_ENV ?= $(if $(BENCH_QUICK),REPS=2 DURATION=5 LAT_DURATION=3)
PROXY_BENCH_ENV ?= $(if $(BENCH_QUICK),REPS=3 SCALE_REPS=1 DURATION=3s)
ifneq ($(BENCH_QUICK),)
bench: export SKIFF_BENCH_QUICK := 1
endif
BENCH_TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
bench: export SKIFF := $(BENCH_TARGET_DIR)/release/skiff
bench: export SKIFF_BENCH_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' (with uncommitted changes)')
bench: bootstrap
	$(CARGO) build --release --locked -p skiff
	$(CARGO) bench --locked -p skiff-benches $(if $(CRITERION_ARGS),-- $(CRITERION_ARGS))
	$(DNS_BENCH_ENV) benches/dns/run.sh
	$(INGRESS_BENCH_ENV) benches/ingress/run.sh
	$(PROXY_BENCH_ENV) benches/proxy/run.sh
	benches/report.sh

## Fuzz every target in turn, FUZZ_SECONDS each (needs cargo-fuzz; stable Rust with
## RUSTC_BOOTSTRAP=1 for the sanitizer flags cargo-fuzz passes, so no nightly toolchain).
FUZZ_TARGETS ?= manifest router patch dns_packet
fuzz:
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=$${FUZZ_SECONDS:-300} -max_len=65536 || exit 1; \
	done
