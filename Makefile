# fvescrow: `make test` runs every check CI runs, installing or building the
# real parts the tests need (cached under $(FVESCROW_CACHE)).

FVESCROW_CACHE ?= $(HOME)/.cache/fvescrow
FVESCROW_INTEGRATION ?= 1
FUZZTIME ?= 10s
export FVESCROW_CACHE FVESCROW_INTEGRATION FUZZTIME

.PHONY: test lint unit fuzz prereqs build bench

test:
	./scripts/test.sh

prereqs:
	./scripts/prereqs.sh

lint:
	./scripts/test.sh lint

unit:
	./scripts/test.sh unit

fuzz:
	./scripts/test.sh fuzz

build:
	go build -o bin/fvescrow ./cmd/fvescrow

# Benchmarks (figures for docs/operations.md#benchmarks); real parts as for
# the tests. BENCHTIME applies to the per-operation benchmarks.
BENCHTIME ?= 2s
bench: prereqs
	./scripts/bench.sh
