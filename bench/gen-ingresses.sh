#!/usr/bin/env bash
# Writes a manifests directory with N routes for the proxy's standalone mode:
#   bench/gen-ingresses.sh N DIR [UPSTREAM_PORT]
# Route i (1..N) is the host svc-i.bench.localhost, path / (Prefix), through Service svc-i (port 80
# named http) and its EndpointSlice to 127.0.0.1:UPSTREAM_PORT (default 19000): every route ends
# at the same upstream, so the proxy's cost per route is all that changes with N.
# Files: 00-class.yaml, services.yaml, endpointslices.yaml, ingresses.yaml (one document each).
set -euo pipefail
n=${1:?usage: gen-ingresses.sh N DIR [UPSTREAM_PORT]}
dir=${2:?usage: gen-ingresses.sh N DIR [UPSTREAM_PORT]}
port=${3:-19000}
mkdir -p "$dir"
rm -f "$dir"/*.yaml
cat >"$dir/00-class.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portico
  annotations:
    ingressclass.kubernetes.io/is-default-class: "true"
spec:
  controller: portico.dev/ingress-controller
YAML
# awk writes the 3*N documents in well under a second, where a shell loop would take many.
awk -v n="$n" -v port="$port" -v dir="$dir" 'BEGIN {
  svc = dir "/services.yaml"; eps = dir "/endpointslices.yaml"; ing = dir "/ingresses.yaml"
  for (i = 1; i <= n; i++) {
    printf "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-%d\nspec:\n  ports:\n  - name: http\n    port: 80\n", i > svc
    printf "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-%d-1\n  labels:\n    kubernetes.io/service-name: svc-%d\naddressType: IPv4\nports:\n- name: http\n  port: %d\nendpoints:\n- addresses: [\"127.0.0.1\"]\n  conditions:\n    ready: true\n", i, i, port > eps
    printf "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: svc-%d\nspec:\n  rules:\n  - host: svc-%d.bench.localhost\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: svc-%d\n            port:\n              name: http\n", i, i, i > ing
  }
}'
