#!/usr/bin/env bash
# Runs every check of the workspace: formatting, clippy with the workspace lints as errors, every
# test, and a short run of every fuzz target. The keyring tests talk to a real Secret Service, so
# the tests run inside a private D-Bus session with an unlocked gnome-keyring; the browser tests
# drive Debian's Chromium through chromedriver. Missing Debian packages are installed when this
# runs as root; otherwise it prints the one command that installs them and stops.
#
# Arguments are passed to `cargo test` (e.g. `tests/run-all.sh -p idp -- refresh`); with
# arguments, only the tests run (no fmt, clippy or fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

# sqlite3: the SIGKILL durability test reads the database read-only after the restart.
packages=(dbus gnome-keyring libdbus-1-dev pkg-config chromium chromium-driver postgresql sqlite3)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Node.js and npm (for axe-core) by command, not by package: a NodeSource `nodejs` ships npm
# itself and conflicts with Debian's `npm` package.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "error: missing Debian packages; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
for tool in dbus-run-session gnome-keyring-daemon chromium chromedriver cargo node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found on PATH" >&2; exit 1; }
done
# The PostgreSQL tests start a throwaway server with initdb and pg_ctl (idp::testing::pg), which
# Debian keeps in /usr/lib/postgresql/<version>/bin, off PATH; the tests look there too. They
# fail, never skip, without it; this check only says so first.
pg_found=0
for dir in /usr/lib/postgresql/*/bin $(echo "$PATH" | tr ':' ' '); do
  if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then pg_found=1; break; fi
done
[ $pg_found -eq 1 ] || { echo "error: PostgreSQL's initdb and pg_ctl not found in /usr/lib/postgresql/*/bin or on PATH; install them with: apt-get install -y postgresql" >&2; exit 1; }

# axe-core for the accessibility test, pinned by tests/axe/package-lock.json and installed into
# tests/axe/node_modules (gitignored; never vendored). Reinstalled when the pinned version is not
# the installed one; the test fails, never skips, without it.
axe_ok() {
  node -e 'const l = require("./tests/axe/package-lock.json").packages["node_modules/axe-core"].version;
    const i = require("./tests/axe/node_modules/axe-core/package.json").version;
    process.exit(l === i ? 0 : 1)' 2>/dev/null
}
if ! axe_ok; then
  echo "== npm ci (tests/axe: axe-core)"
  npm ci --prefix tests/axe --ignore-scripts --no-audit --no-fund
fi

full=1
[ $# -gt 0 ] && full=0

if [ $full -eq 1 ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy (workspace lints as errors)"
  cargo clippy --workspace --all-targets -- -D warnings
fi

# Tests that need the Secret Service or IPv6 loopback must fail, not skip, when it is absent.
export KUBELOGIN_REQUIRE_KEYRING=1
export REQUIRE_IPV6=1
# A fresh keyring directory each run: an existing login keyring made with another password
# would stay locked.
keyring_home=$(mktemp -d)
trap 'rm -rf "$keyring_home"' EXIT
export XDG_DATA_HOME="$keyring_home"
echo "== cargo test"
dbus-run-session -- bash -c '
  set -euo pipefail
  eval "$(printf "test-keyring-password" | gnome-keyring-daemon --unlock --components=secrets)"
  export GNOME_KEYRING_CONTROL
  cargo test --workspace --all-targets "$@"
' run-all "$@"

if [ $full -eq 1 ] && [ -d fuzz ]; then
  echo "== fuzzing (each target ${FUZZ_SECONDS:-30} s)"
  fuzz/run.sh "${FUZZ_SECONDS:-30}"
fi
