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
	./target/release/skiff up -f examples/

## Criterion micro-benchmarks (the end-to-end comparisons arrive with `skiff bench`).
bench: bootstrap
	$(CARGO) bench --locked -p skiff-benches

## Fuzz the manifest parser (needs nightly and cargo-fuzz).
fuzz:
	cd fuzz && $(CARGO) +nightly fuzz run manifest -- -max_total_time=$${FUZZ_SECONDS:-300}
