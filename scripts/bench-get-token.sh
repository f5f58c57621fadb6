#!/usr/bin/env bash
# The cached get-token path side by side with a process start (/bin/true) and the Go credential
# plugin gke-gcloud-auth-plugin answering from its own cache, in one hyperfine run.
#
#   scripts/bench-get-token.sh [NAME=]BINARY... [-- hyperfine options]
#
# Each BINARY is a kubectl-oidc_login to measure (several: each step of a build change, in one
# run). A throwaway HOME gets a valid token for `--oidc-issuer-url=http://127.0.0.1:1
# --oidc-client-id=kubernetes` (an unreachable issuer: the hit needs no network) and the Go
# plugin's cache for the current context `bench`. Defaults: --warmup 50 --runs 500.
set -euo pipefail

bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#bins[@]} -gt 0 ] || { echo "error: name at least one kubectl-oidc_login binary" >&2; exit 1; }
gke=${GKE_PLUGIN:-/usr/lib/google-cloud-sdk/bin/gke-gcloud-auth-plugin}
for tool in hyperfine "$gke"; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done

home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
mkdir -p "$home/.kube"
cat > "$home/.kube/config" <<'EOF'
apiVersion: v1
kind: Config
current-context: bench
clusters:
- name: bench
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: bench
  context: {cluster: bench, user: bench}
users:
- name: bench
  user: {token: x}
EOF
printf '{"current_context":"bench","access_token":"ya29.x","token_expiry":"2100-01-01T00:00:00Z"}' \
  > "$home/.kube/gke_gcloud_auth_plugin_cache"

flags=(get-token --oidc-issuer-url=http://127.0.0.1:1 --oidc-client-id=kubernetes)
first=${bins[0]#*=}
# The cache key is the name of the lock file a (failing) first call leaves.
env -u KUBECACHEDIR -u KUBERNETES_EXEC_INFO HOME="$home" "$first" "${flags[@]}" >/dev/null 2>&1 || true
dir=$home/.kube/cache/oidc-login
key=$(basename "$(ls "$dir"/*.lock)" .lock)
b64() { printf '%s' "$1" | base64 -w0 | tr '+/' '-_' | tr -d '='; }
jwt="$(b64 '{"alg":"none"}').$(b64 '{"iss":"http://127.0.0.1:1","aud":"kubernetes","sub":"bench","exp":4102444800}')."
( umask 077; printf '{"id_token":"%s","refresh_token":"r"}' "$jwt" > "$dir/$key" )

args=()
for b in "${bins[@]}"; do
  name=${b%%=*}; path=${b#*=}; [ "$name" = "$b" ] && name=$(basename "$path")
  HOME="$home" "$path" "${flags[@]}" | grep -q '"token"' || { echo "error: $path gave no cached token" >&2; exit 1; }
  args+=(-n "$name" "$path ${flags[*]}")
done
args+=(-n true true -n gke-gcloud-auth-plugin "$gke")
[ $# -gt 0 ] || set -- --warmup 50 --runs 500
HOME="$home" KUBECONFIG="$home/.kube/config" KUBECACHEDIR= \
  hyperfine -N --export-json "$home/result.json" "$@" "${args[@]}"
# Medians (the figure the README states) and each against true and the Go plugin.
python3 - "$home/result.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
t, g = r["true"], r["gke-gcloud-auth-plugin"]
print(f"{'command':<28} {'median ms':>9} {'/ true':>7} {'/ gke':>6}")
for name, m in r.items():
    print(f"{name:<28} {m:9.3f} {m / t:7.2f} {m / g:6.2f}")
PY
