#!/usr/bin/env bash
# Benchmarks with real parts (`make bench`): figures for the docs and issue
# notes, never assertions. Output also goes to artifacts/bench.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export FVESCROW_INTEGRATION="${FVESCROW_INTEGRATION:-1}"
BENCHTIME="${BENCHTIME:-2s}"
eval "$(./scripts/prereqs.sh)"
mkdir -p artifacts
{
	# Per-operation benchmarks: ingest and the crypto floor, the stores, the
	# raw Vault write, MDM round trips next to bare nanomdm.
	go test -run '^$' -bench . -benchmem -benchtime "$BENCHTIME" \
		./escrow/ ./escrow/sqlstore/ ./escrow/vaultstore/ ./escrow/agestore/ ./bench/mdm/
	# Whole-fleet runs: one campaign over FVESCROW_BENCH_DEVICES Macs (10000).
	go test -run '^$' -bench . -benchtime 1x -timeout 60m ./bench/rotation/
} 2>&1 | tee artifacts/bench.txt
