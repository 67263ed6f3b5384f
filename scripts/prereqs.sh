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

# Vault: the real server, built from Vault's own Go module (deploy/vault-dev)
# because no package manager here ships it. The cold build takes about ten
# minutes; the binary is cached by version.
vault_version=1.21.0
vault="$cache/vault-$vault_version"
if [ ! -x "$vault" ]; then
	log "building Vault $vault_version from source (first run only, ~10 min)"
	(cd deploy/vault-dev && go build -o "$vault.tmp" .) >&2
	mv "$vault.tmp" "$vault"
fi
echo "export FVESCROW_VAULT_BIN=$vault"

# PostgreSQL: use the running server; start the packaged cluster if it is
# down; install it if missing. Tests create their own databases.
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! command -v pg_isready >/dev/null; then
	apt_install postgresql postgresql-client || true
fi
if ! pg_ready && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
	log "starting PostgreSQL"
	for v in $(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 || true; done
	for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
if pg_ready; then
	echo "export FVESCROW_TEST_POSTGRES=${FVESCROW_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
else
	log "PostgreSQL is not running on 127.0.0.1:5432; PostgreSQL tests will fail under FVESCROW_INTEGRATION=1"
fi

# mdmb: an independent MDM device simulator (enrolls through SCEP, answers
# DeviceInformation, ProfileList and InstallProfile). Built from its own
# throwaway module so it never enters fvescrow's go.mod; v0.1.0 is the only
# version the proxy serves. Both `go get` steps are needed: the first adds
# the module, the second the go.sum entries of cmd/mdmb's dependencies.
mdmb_version=v0.1.0
mdmb="$cache/mdmb-$mdmb_version"
if [ ! -x "$mdmb" ]; then
	log "building mdmb $mdmb_version"
	tmp=$(mktemp -d)
	# A && chain: errexit does not apply inside a subshell tested by ||.
	(
		cd "$tmp" && export GOWORK=off GOFLAGS=-mod=mod &&
			go mod init x &&
			go get "github.com/jessepeterson/mdmb@$mdmb_version" &&
			go get "github.com/jessepeterson/mdmb/cmd/mdmb@$mdmb_version" &&
			go build -ldflags "-X main.version=$mdmb_version" -o "$mdmb.tmp" github.com/jessepeterson/mdmb/cmd/mdmb
	) >&2 || { rm -rf "$tmp" "$mdmb.tmp"; log "building mdmb $mdmb_version failed"; exit 1; }
	mv "$mdmb.tmp" "$mdmb"
	rm -rf "$tmp"
fi
echo "export FVESCROW_MDMB_BIN=$mdmb"

# Chromium and playwright-core: the browser test of the web UI. Chromium comes
# from Debian (`playwright install` downloads are not possible here);
# playwright-core is installed with `npm ci` from web/e2e's lock file into the
# cache, keyed by the lock file's hash, never into the repository.
chromium=/usr/bin/chromium
[ -x "$chromium" ] || apt_install chromium || true
if [ -x "$chromium" ]; then
	echo "export FVESCROW_CHROMIUM=$chromium"
else
	log "no $chromium; the browser test will fail under FVESCROW_INTEGRATION=1"
fi
command -v npm >/dev/null || apt_install nodejs npm || true
lock=web/e2e/package-lock.json
pw="$cache/web-e2e-$(sha256sum "$lock" | cut -c1-16)"
# A cache counts only if node can load it (a run cut short, or two runs at
# once, could leave half a tree); each run installs into its own folder and
# renames it into place, so concurrent runs cannot mix their files.
pw_ok() { [ -d "$1/node_modules/playwright-core" ] && (cd "$1" && node -e 'require("playwright-core")') >/dev/null 2>&1; }
if ! pw_ok "$pw" && command -v npm >/dev/null; then
	log "installing playwright-core from $lock"
	tmp="$pw.tmp.$$"
	rm -rf "$tmp" && mkdir -p "$tmp"
	cp web/e2e/package.json "$lock" "$tmp/"
	if (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund) >&2 && pw_ok "$tmp"; then
		rm -rf "$pw.old.$$"
		[ -e "$pw" ] && mv "$pw" "$pw.old.$$"
		mv "$tmp" "$pw" || rm -rf "$tmp"
		rm -rf "$pw.old.$$"
	else
		rm -rf "$tmp"
		log "npm ci of playwright-core failed; the browser test will fail under FVESCROW_INTEGRATION=1"
	fi
fi
if [ -d "$pw/node_modules/playwright-core" ]; then
	echo "export FVESCROW_NODE_MODULES=$pw/node_modules"
fi

# ICU: the real regex engine behind customRegex and NSPredicate MATCHES, for
# icuregex's differential test. A small C harness
# (fde/passcode/icuregex/testdata/icu_harness.c) is built against libicu into
# the cache, keyed by the source's hash and ICU's version; a cached build
# counts only if it runs and answers.
icu_ok() { pkg-config --exists icu-i18n 2>/dev/null && [ -f "$(pkg-config --variable=includedir icu-i18n)/unicode/uregex.h" ]; }
icu_ok || apt_install libicu-dev pkg-config || true
command -v gcc >/dev/null || apt_install gcc libc6-dev || true
icu_src=fde/passcode/icuregex/testdata/icu_harness.c
harness_ok() { [ -x "$1" ] && [ "$(printf '61\t61\n' | "$1" 2>/dev/null)" = 1 ]; }
if icu_ok && command -v gcc >/dev/null; then
	icu_harness="$cache/bin/icu-harness-$(sha256sum "$icu_src" | cut -c1-16)-icu$(pkg-config --modversion icu-i18n)"
	if ! harness_ok "$icu_harness"; then
		log "building the ICU harness from $icu_src"
		# shellcheck disable=SC2046 # pkg-config's flags are meant to split
		if gcc -O2 -Wall -o "$icu_harness.tmp.$$" "$icu_src" $(pkg-config --cflags --libs icu-i18n) >&2 && harness_ok "$icu_harness.tmp.$$"; then
			mv "$icu_harness.tmp.$$" "$icu_harness"
		else
			rm -f "$icu_harness.tmp.$$"
			log "building the ICU harness failed; the ICU differential test will fail under FVESCROW_INTEGRATION=1"
		fi
	fi
	if harness_ok "$icu_harness"; then
		echo "export FVESCROW_ICU_HARNESS=$icu_harness"
	fi
else
	log "no libicu-dev or gcc; the ICU differential test will fail under FVESCROW_INTEGRATION=1"
fi
