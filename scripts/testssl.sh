#!/usr/bin/env bash
# Runs Debian's testssl.sh (apt-get install testssl.sh; the command is `testssl`) against the
# gateway's STARTTLS port on loopback, offline-safe (no DNS, no CRL/OCSP phone-out), and prints a
# summary by severity. Exits 1 when any finding is rated HIGH or CRITICAL. Starts its own gateway
# from the sources (a self-signed certificate in a temporary DATA_DIR) unless SMTP_PORT is given.
#   scripts/testssl.sh                   # start a gateway and test it
#   SMTP_PORT=587 scripts/testssl.sh     # test a gateway already listening on 127.0.0.1:587
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${TESTSSL_OUT:-$(mktemp -d)}"
testssl="$(command -v testssl || command -v testssl.sh || true)"
if [ -z "$testssl" ]; then
  echo "testssl.sh is not installed: apt-get install testssl.sh" >&2
  exit 2
fi

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

gateway_pid=""
cleanup() {
  if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  if [ -z "${TESTSSL_OUT:-}" ]; then rm -rf "$out"; fi
}
trap cleanup EXIT

# A throwaway CA and a certificate for localhost signed by it, with a CRL distribution point (as a
# cert-manager issuer would give), so the certificate checks judge a realistic chain; the URL is never
# fetched (no --phone-out).
make_certificate() {
  local dir="$1"
  openssl req -x509 -newkey rsa:2048 -nodes -days 90 -subj "/CN=smtp-gateway test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$dir/key.pem" -out "$dir/req.csr" >/dev/null 2>&1
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "crlDistributionPoints=URI:http://crl.invalid/test.crl" \
    "authorityInfoAccess=OCSP;URI:http://ocsp.invalid" >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/req.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 90 -sha256 \
    -extfile "$dir/ext.cnf" -out "$dir/cert.pem" >/dev/null 2>&1
}

port="${SMTP_PORT:-}"
ca_args=()
if [ -z "$port" ]; then
  port="$(free_port)"
  data_dir="$out/data"
  mkdir -p "$data_dir"
  make_certificate "$out"
  ca_args=(--add-ca "$out/ca.pem")
  (cd "$root" && SMTP_HOST=127.0.0.1 SMTP_PORT="$port" HTTP_HOST=127.0.0.1 HTTP_PORT="$(free_port)" \
    SMTP_HOSTNAME=localhost DATA_DIR="$data_dir" LOG_LEVEL=error \
    TLS_CERT_PATH="$out/cert.pem" TLS_KEY_PATH="$out/key.pem" \
    node --import tsx src/cli.ts serve >"$out/gateway.log" 2>&1) &
  gateway_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
fi

# -p protocols, -s cipher categories, -f forward secrecy, -S server defaults, -U vulnerabilities
"$testssl" --quiet --color 0 --warnings off --nodns none --ip 127.0.0.1 \
  --connect-timeout 5 --openssl-timeout 10 \
  --starttls smtp -p -s -f -S -U "${ca_args[@]}" \
  --jsonfile "$out/testssl.json" "127.0.0.1:$port" >"$out/testssl.txt" 2>&1 || true

if [ ! -s "$out/testssl.json" ]; then
  echo "testssl.sh produced no results; its output:" >&2
  cat "$out/testssl.txt" >&2
  exit 2
fi

echo "testssl.sh $("$testssl" --version 2>/dev/null | grep -o 'testssl *[0-9.]*' | head -1 | awk '{print $2}') against 127.0.0.1:$port (STARTTLS)"
jq -r 'group_by(.severity) | map("  \(.[0].severity): \(length)") | .[]' "$out/testssl.json"
echo "protocols offered:"
jq -r '.[] | select(.id | test("^(SSLv2|SSLv3|TLS1|TLS1_1|TLS1_2|TLS1_3)$")) | "  \(.id): \(.finding)"' "$out/testssl.json"
findings="$(jq -r '.[] | select(.severity == "HIGH" or .severity == "CRITICAL") | "  \(.severity) \(.id): \(.finding)"' "$out/testssl.json")"
# LOW/MEDIUM/WARN are listed for the record
jq -r '.[] | select(.severity == "MEDIUM" or .severity == "LOW" or .severity == "WARN") | "  \(.severity) \(.id): \(.finding)"' "$out/testssl.json"
if [ -n "$findings" ]; then
  echo "HIGH or CRITICAL findings:"
  echo "$findings"
  exit 1
fi
echo "no HIGH or CRITICAL findings"
