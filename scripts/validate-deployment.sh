#!/usr/bin/env bash
# Validates deployment/ and flake.nix offline: YAML of every non-template file (and yamllint),
# the Helm chart rendered with default, production and staging values and checked against the
# Kubernetes API schemas, and `nix-instantiate --parse flake.nix`. Prints one line per check.
#
# Tools (Debian): golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev
# nix-bin yamllint. A missing tool skips its check, with the package to install.
# Where a real helm is on PATH (nix develop), the chart is also rendered and linted by helm.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ]; then
  echo "node_modules is missing: run npm ci first" >&2
  exit 1
fi

status=0
npx --no-install tsx scripts/validate-deployment.ts || status=$?

if command -v helm >/dev/null 2>&1; then
  chart=deployment/helm/smtp-gateway
  helm lint "$chart" -f "$chart/values-production.yaml" || status=1
  for values in "" "$chart/values-production.yaml" "$chart/values-staging.yaml"; do
    out=$(mktemp)
    if helm template smtp-gateway "$chart" ${values:+-f "$values"} --api-versions monitoring.coreos.com/v1 >"$out"; then
      echo "ok   helm template ${values:-(default values)}"
      if command -v kubeconform >/dev/null 2>&1; then
        kubeconform -strict -summary -ignore-missing-schemas "$out" || status=1
      fi
    else
      echo "FAIL helm template ${values:-(default values)}"
      status=1
    fi
    rm -f "$out"
  done
else
  echo "skip helm template/lint: helm is not installed (nix develop provides it)"
fi

exit "$status"
