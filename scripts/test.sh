#!/usr/bin/env bash
# The one test command (`make test`): formatting, vet, staticcheck, the race-
# enabled test suite with real parts, and a short run of every fuzzer.
# With FVESCROW_INTEGRATION=1 (the default of `make test`, and what .ci/run
# sets) a missing real part fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export FVESCROW_INTEGRATION="${FVESCROW_INTEGRATION:-1}"
FUZZTIME="${FUZZTIME:-10s}"
what="${1:-all}"
start=$SECONDS
step() { echo "==> $* ($((SECONDS - start))s)"; }

eval "$(./scripts/prereqs.sh)"

lint() {
	step "gofmt"
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './deploy/vault-dev/*'))
	if [ -n "$unformatted" ]; then
		echo "gofmt would change:"; echo "$unformatted"; return 1
	fi
	step "go vet"
	go vet ./...
	step "staticcheck"
	"$FVESCROW_STATICCHECK" ./...
	# -race needs cgo; this proves the binary needs none (modernc SQLite).
	step "CGO_ENABLED=0 go build"
	CGO_ENABLED=0 go build -o /dev/null ./cmd/fvescrow
}

unit() {
	step "go test -race (FVESCROW_INTEGRATION=$FVESCROW_INTEGRATION)"
	go test -race -count=1 -timeout 30m ./...
}

fuzz() {
	# Every Fuzz target in the module, each for $FUZZTIME.
	grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
		pkg="./$(dirname "${f#./}")"
		for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
			step "fuzz $pkg $name for $FUZZTIME"
			go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg"
		done
	done
}

bench() {
	# Every benchmark once, with real parts, so none rots; `make bench`
	# measures. The campaign runs over FVESCROW_BENCH_DEVICES Macs.
	step "benchmarks, one iteration each (FVESCROW_BENCH_DEVICES=${FVESCROW_BENCH_DEVICES:-10000})"
	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./...
}

case "$what" in
all) lint; unit; bench; fuzz ;;
lint | unit | fuzz | bench) "$what" ;;
*) echo "usage: $0 [all|lint|unit|bench|fuzz]" >&2; exit 2 ;;
esac
step "done"
