#!/usr/bin/env bash
# End-to-end scenario on a kind cluster: build the image, helm install, apply a policy, deploy an agent, run psql
# through the injected sidecar, check a denial, masking, `kubectl get dap`, the kill switch (spec.suspend), live control
# (pgwarden control suspend/resume), and the audit trail in the collector,
# signed by the sidecars (audit.signingKeySecret) and judged against the public key (collector.auditKeys).
# Needs: docker (with a running daemon), kind. helm and kubectl come from scripts/helm.sh when not installed.
# Keep the cluster for debugging with KEEP_CLUSTER=1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER=pgwarden-e2e
IMAGE=pgwarden:e2e
NS=pgwarden

skip() { echo "e2e SKIPPED: $*" >&2; exit 0; }
fail() { echo "e2e FAILED: $*" >&2; exit 1; }
command -v docker >/dev/null || skip "docker is not installed"
docker info >/dev/null 2>&1 || skip "the Docker daemon is not reachable"
command -v kind >/dev/null || skip "kind is not installed (https://kind.sigs.k8s.io)"
HELM="$(command -v helm || "$ROOT/scripts/helm.sh")"
KUBECTL="$(command -v kubectl || echo "$(dirname "$("$ROOT/scripts/helm.sh")")/kubectl")"
k() { "$KUBECTL" --context "kind-$CLUSTER" "$@"; }

cleanup() { [[ "${KEEP_CLUSTER:-}" == 1 ]] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "--- cluster"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config "$ROOT/e2e/kind-config.yaml" --wait 120s
echo "--- image"
docker build -f "$ROOT/e2e/Dockerfile" -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "--- database"
k apply -f "$ROOT/e2e/manifests/postgres.yaml"
k -n data rollout status deploy/orders-db --timeout=180s

echo "--- audit signing key"
# Sidecars sign their chains (audit.signingKeySecret); the collector holds only the public key (collector.auditKeys).
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"; cleanup' EXIT
node -e '
const { generateKeyPairSync } = require("node:crypto");
const fs = require("node:fs");
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
fs.writeFileSync(process.argv[1], privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
const publicKeyPem = publicKey.export({ format: "pem", type: "spki" });
fs.writeFileSync(process.argv[2], JSON.stringify({ collector: { auditKeys: [{ name: "e2e", publicKey: publicKeyPem }] } }));
' "$WORK/signing.key" "$WORK/values-signing.json"
k get namespace "$NS" >/dev/null 2>&1 || k create namespace "$NS"
k -n "$NS" create secret generic pgwarden-audit-signing --from-file=signing.key="$WORK/signing.key" \
  --dry-run=client -o yaml | k apply -f -
# An approver for live control (pgwarden control): the collector stores only the token's SHA-256.
APPROVER_TOKEN="$(node -e 'console.log(require("node:crypto").randomBytes(24).toString("hex"))')"
APPROVER_SHA="$(node -e 'console.log(require("node:crypto").createHash("sha256").update(process.argv[1]).digest("hex"))' "$APPROVER_TOKEN")"
printf -- '- name: e2e-oncall\n  groups: [sre]\n  tokenSha256: %s\n' "$APPROVER_SHA" >"$WORK/approvers.yaml"
k -n "$NS" create secret generic pgwarden-approvers --from-file=approvers.yaml="$WORK/approvers.yaml" \
  --dry-run=client -o yaml | k apply -f -

echo "--- helm install"
"$HELM" upgrade --install pgw "$ROOT/charts/pgwarden" --kube-context "kind-$CLUSTER" --namespace "$NS" --create-namespace \
  --set image.repository=pgwarden --set image.tag=e2e --set image.pullPolicy=Never \
  --set audit.signingKeySecret=pgwarden-audit-signing --set operator.refreshPods=true \
  --set collector.approversSecret=pgwarden-approvers \
  -f "$WORK/values-signing.json" --wait --timeout 5m
k -n "$NS" rollout status deploy/pgw-pgwarden-operator --timeout=120s
k get crd databaseaccesspolicies.pgwarden.dev maskingrules.pgwarden.dev

echo "--- policy"
k apply -f "$ROOT/e2e/manifests/policy.yaml"
for _ in $(seq 60); do
  [[ "$(k -n agents get dap analytics-agent -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] && break
  sleep 2
done
k -n agents get dap
[[ "$(k -n agents get dap analytics-agent -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] || fail "policy not Ready"
k -n agents get configmap pgwarden-analytics-agent -o jsonpath='{.metadata.annotations.pgwarden\.dev/content-hash}' | grep -q '^sha256:' || fail "no rendered ConfigMap"

echo "--- agent"
k apply -f "$ROOT/e2e/manifests/agent.yaml"
k -n agents rollout status deploy/analytics-agent --timeout=180s
POD="$(k -n agents get pod -l app=analytics-agent -o jsonpath='{.items[0].metadata.name}')"
[[ "$(k -n agents get pod "$POD" -o jsonpath='{.spec.initContainers[0].restartPolicy}')" == Always ]] || fail "no native sidecar injected"
k -n agents get pod "$POD" -o jsonpath='{.spec.containers[0].volumeMounts}' | grep -q credentials && fail "credentials mounted into the agent"

echo "--- allowed statement through the sidecar"
OUT="$(k -n agents exec "$POD" -c agent -- psql -XAtc 'select count(*) from public.orders')"
[[ "$OUT" == 2 ]] || fail "expected 2 orders, got: $OUT"

echo "--- masking"
OUT="$(k -n agents exec "$POD" -c agent -- psql -XAtc 'select email from public.customers order by id limit 1')"
[[ "$OUT" != *@example.com* ]] || fail "email not masked: $OUT"

echo "--- denial"
if ERR="$(k -n agents exec "$POD" -c agent -- psql -Xc 'delete from public.orders' 2>&1)"; then fail "delete was allowed"; fi
grep -q -i "denied\|42501\|permission" <<<"$ERR" || fail "unexpected error: $ERR"

echo "--- unsafe pod refused by the webhook"
if ERR="$(k -n agents run unsafe --image=postgres:15 --labels=app=analytics-agent --overrides='{"spec":{"hostPID":true}}' --restart=Never -- sleep 1 2>&1)"; then
  fail "hostPID pod was admitted"
fi
grep -q hostPID <<<"$ERR" || fail "refusal does not say why: $ERR"

echo "--- audit"
# The chart's generated reader: the API serves the trail only with its token.
READER_TOKEN="$(k -n "$NS" get secret pgw-pgwarden-collector-reader -o jsonpath='{.data.token}' | base64 -d)"
STATUS="$(k -n "$NS" exec statefulset/pgw-pgwarden-collector -- node -e \
  "fetch('http://127.0.0.1:8080/api/v1/events').then(r=>console.log(r.status))")"
[[ "$STATUS" == 401 ]] || fail "the audit API answered $STATUS without a token"
for _ in $(seq 30); do
  EVENTS="$(k -n "$NS" exec statefulset/pgw-pgwarden-collector -- env "T=$READER_TOKEN" node -e \
    "fetch('http://127.0.0.1:8080/api/v1/events?namespace=agents&limit=50',{headers:{authorization:'Bearer '+process.env.T}}).then(r=>r.text()).then(t=>console.log(t))" 2>/dev/null || true)"
  grep -q '"deny"' <<<"$EVENTS" && grep -q 'public.orders' <<<"$EVENTS" && break
  sleep 2
done
grep -q '"deny"' <<<"$EVENTS" || fail "the denial is not in the audit store"

echo "--- signed audit"
# Each psql session above ended, so the sidecar signed it to its end (a checkpoint after session.end).
for _ in $(seq 30); do
  SESSIONS="$(k -n "$NS" exec statefulset/pgw-pgwarden-collector -- env "T=$READER_TOKEN" node -e \
    "fetch('http://127.0.0.1:8080/api/v1/sessions?namespace=agents&signature=signed',{headers:{authorization:'Bearer '+process.env.T}}).then(r=>r.text()).then(t=>console.log(t))" 2>/dev/null || true)"
  grep -q '"signedBy":"e2e"' <<<"$SESSIONS" && break
  sleep 2
done
grep -q '"signedBy":"e2e"' <<<"$SESSIONS" || fail "no session of the agent is signed by the e2e key: $SESSIONS"

echo "--- chain heads and findings"
# The sidecar's own chain names the agent's session chains (audit.heads); nothing is missing, so no finding is open.
for _ in $(seq 30); do
  HEADS="$(k -n "$NS" exec statefulset/pgw-pgwarden-collector -- env "T=$READER_TOKEN" node -e \
    "fetch('http://127.0.0.1:8080/api/v1/events?type=audit.heads&namespace=agents&limit=5',{headers:{authorization:'Bearer '+process.env.T}}).then(r=>r.text()).then(t=>console.log(t))" 2>/dev/null || true)"
  grep -q '"chains"' <<<"$HEADS" && break
  sleep 2
done
grep -q '"chains"' <<<"$HEADS" || fail "no audit.heads event from the agent's sidecar: $HEADS"
FINDINGS="$(k -n "$NS" exec statefulset/pgw-pgwarden-collector -- env "T=$READER_TOKEN" node -e \
  "fetch('http://127.0.0.1:8080/api/v1/findings',{headers:{authorization:'Bearer '+process.env.T}}).then(r=>r.text()).then(t=>console.log(t))")"
grep -q '"items":\[\]' <<<"$FINDINGS" || fail "open chain findings: $FINDINGS"

echo "--- kill switch (spec.suspend)"
# Delivered through the re-rendered ConfigMap; operator.refreshPods annotates the agent's pod so its kubelet syncs
# it at once (without it, up to about a minute). The pod must carry the operator's nudge.
k -n agents patch dap analytics-agent --type merge -p '{"spec":{"suspend":true}}'
[[ "$(k -n agents get dap analytics-agent -o jsonpath='{.spec.suspend}')" == true ]] || fail "suspend not set"
SUSPENDED=
for _ in $(seq 60); do
  if ERR="$(k -n agents exec "$POD" -c agent -- psql -XAtc 'select 1' 2>&1)"; then sleep 3; continue; fi
  grep -q "is suspended" <<<"$ERR" && SUSPENDED=1 && break
  sleep 3
done
[[ -n "$SUSPENDED" ]] || fail "the suspended policy still let the agent in: $ERR"
k -n agents get pod "$POD" -o jsonpath='{.metadata.annotations.pgwarden\.dev/policy-refresh}' | grep -q '^sha256:' \
  || fail "the operator did not annotate the agent's pod (operator.refreshPods)"
k -n agents patch dap analytics-agent --type merge -p '{"spec":{"suspend":false}}'
for _ in $(seq 60); do
  OUT="$(k -n agents exec "$POD" -c agent -- psql -XAtc 'select count(*) from public.orders' 2>/dev/null || true)"
  [[ "$OUT" == 2 ]] && break
  sleep 3
done
[[ "$OUT" == 2 ]] || fail "the agent was not let back in after suspend: false"

echo "--- live control (pgwarden control suspend / resume, through the collector and NATS)"
control() {
  k -n "$NS" exec statefulset/pgw-pgwarden-collector -- env "PGWARDEN_APPROVER_TOKEN=$APPROVER_TOKEN" \
    node /app/bin/pgwarden control "$@" --collector http://127.0.0.1:8080
}
control suspend agents/analytics-agent --reason "e2e incident"
SUSPENDED=
for _ in $(seq 15); do
  if ERR="$(k -n agents exec "$POD" -c agent -- psql -XAtc 'select 1' 2>&1)"; then sleep 1; continue; fi
  grep -q "is suspended" <<<"$ERR" && SUSPENDED=1 && break
  sleep 1
done
[[ -n "$SUSPENDED" ]] || fail "a live suspension did not stop the agent within 15 s: $ERR"
control list | grep -q "agents/analytics-agent" || fail "pgwarden control list does not show the suspension"
control resume agents/analytics-agent --reason "e2e incident over"
for _ in $(seq 15); do
  OUT="$(k -n agents exec "$POD" -c agent -- psql -XAtc 'select count(*) from public.orders' 2>/dev/null || true)"
  [[ "$OUT" == 2 ]] && break
  sleep 1
done
[[ "$OUT" == 2 ]] || fail "the agent was not let back in after pgwarden control resume"

echo "e2e PASSED"
