#!/usr/bin/env bash
# Installs or builds what fvescrow's tests need and prints `export` lines for
# their locations. Everything is cached under $FVESCROW_CACHE, so a warm
# machine does no work here.
set -euo pipefail
cache="${FVESCROW_CACHE:-$HOME/.cache/fvescrow}"
mkdir -p "$cache/bin"
log() { echo "prereqs: $*" >&2; }

apt_install() {
	if ! command -v apt-get >/dev/null; then
		log "cannot install $* (no apt-get); install it and re-run"; return 1
	fi
	local sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	log "installing $* with apt-get"
	$sudo apt-get install -y -q "$@" >&2 || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q "$@" >&2; }
}

# OpenSSL: the independent CMS implementation in the interop tests.
command -v openssl >/dev/null || apt_install openssl

# staticcheck, pinned (its year-style tags are not served by the proxy here).
staticcheck="$cache/bin/staticcheck-v0.8.2"
if [ ! -x "$staticcheck" ]; then
	log "building staticcheck v0.8.2"
	tmp=$(mktemp -d)
	GOBIN="$tmp" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2 >&2
	mv "$tmp/staticcheck" "$staticcheck"
	rm -rf "$tmp"
fi
echo "export FVESCROW_STATICCHECK=$staticcheck"
