#!/usr/bin/env bash
# Runs every test of the workspace. The keyring tests talk to a real Secret Service, so the
# whole run happens inside a private D-Bus session with an unlocked gnome-keyring.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in dbus-run-session gnome-keyring-daemon cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: missing ${missing[*]} (Debian: apt-get install dbus gnome-keyring; .ci/run installs them)" >&2
  exit 1
fi

# Tests that need the Secret Service must fail, not skip, when it is absent.
export KUBELOGIN_REQUIRE_KEYRING=1
# A fresh keyring directory each run: an existing login keyring made with another password
# would stay locked.
keyring_home=$(mktemp -d)
trap 'rm -rf "$keyring_home"' EXIT
export XDG_DATA_HOME="$keyring_home"
dbus-run-session -- bash -c '
  set -euo pipefail
  eval "$(printf "test-keyring-password" | gnome-keyring-daemon --unlock --components=secrets)"
  export GNOME_KEYRING_CONTROL
  cargo test --workspace --all-targets "$@"
' run-all "$@"
