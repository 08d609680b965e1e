# ward: developer entry points. `make help` lists them.
SHELL := /bin/bash
# Steps of `make test` must run in order even under `make -j`.
.NOTPARALLEL:
CARGO ?= cargo

.PHONY: help deps build release fmt fmt-check clippy test test-only run bench clean

help:
	@echo "make deps       install missing system packages (PostgreSQL, pgbouncer, libclang, ...)"
	@echo "make build      cargo build --workspace"
	@echo "make release    cargo build --release -p ward  (target/release/ward)"
	@echo "make test       deps + rustfmt check + clippy -D warnings + cargo test --workspace"
	@echo "make test-only  cargo test --workspace (no deps/lint)"
	@echo "make fmt        cargo fmt --all"
	@echo "make run        example PostgreSQL + ward on 127.0.0.1:15432 (scripts/run-example.sh)"
	@echo "make bench      pgbench direct vs pgbouncer vs ward, idle-session memory (bench/pgbench.sh)"

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release -p ward

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Plain `cargo test` (not nextest): each integration-test binary starts one throwaway
# PostgreSQL that all of its tests share.
test-only:
	$(CARGO) test --workspace

test: deps fmt-check clippy test-only

run:
	@scripts/run-example.sh

bench:
	@bench/pgbench.sh

clean:
	$(CARGO) clean
	rm -rf ward-data bench/results/work
