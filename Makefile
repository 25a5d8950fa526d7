# Onair: `make run` opens Onair on a fresh Debian/Ubuntu machine; `make test` runs the suite.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/onair-target
CARGO ?= cargo

.PHONY: run test lint build deps deps-test bench docs-errors screenshot

## Install missing system packages, build in release mode and start onair.
run: deps
	$(CARGO) build --release --bin onair
	$(CARGO_TARGET_DIR)/release/onair $(ARGS)

## Install what the tests need and run the whole suite.
test: deps-test
	$(CARGO) test --workspace --all-targets --no-fail-fast
	$(CARGO) test --workspace --doc

## Formatting and lints, as CI checks them.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: deps
	$(CARGO) build --release --bin onair

deps:
	@.ci/install-deps build

deps-test:
	@.ci/install-deps test

## Print every benchmark's JSON (release build).
bench: build
	$(CARGO_TARGET_DIR)/release/onair bench signal --json
	$(CARGO_TARGET_DIR)/release/onair bench media --json
	$(CARGO_TARGET_DIR)/release/onair bench latency --json
	$(CARGO_TARGET_DIR)/release/onair bench fanout --json
	$(CARGO_TARGET_DIR)/release/onair bench ui --json

## The README's screenshot: the studio under Xvfb with live streams in three rooms.
screenshot: build deps-test
	.ci/screenshot docs/studio.png

## Regenerate docs/ERRORS.md from the error enum.
docs-errors:
	$(CARGO) run -q --bin onair -- errors --markdown > docs/ERRORS.md
