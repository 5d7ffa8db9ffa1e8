# Portico: the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test e2e lint fmt crds manifests image bench help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## standalone proxy on config/samples/standalone with two sample backends; prints curl lines
	./scripts/run.sh

test: ## every test of the workspace (unit, golden, real-socket integration); fails if config/crd or config/install.yaml is stale
	./scripts/install-deps.sh test
	$(CARGO) test --workspace --locked
	@if [ -n "$$KUBECONFIG" ]; then $(MAKE) --no-print-directory e2e; \
	else echo "e2e: SKIPPED, KUBECONFIG is not set (the cluster tests above are listed as ignored)"; fi

e2e: ## end-to-end tests against the cluster KUBECONFIG points at
	@test -n "$$KUBECONFIG" || { echo "e2e: KUBECONFIG is not set" >&2; exit 1; }
	$(CARGO) build -p portico-operator --locked
	$(CARGO) test -p portico-e2e --locked -- --ignored --test-threads 1

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## format the workspace
	$(CARGO) fmt --all

crds: ## regenerate config/crd from the Rust types (and config/install.yaml with them)
	$(CARGO) run -q -p portico-crds --bin crdgen

manifests: crds ## regenerate config/install.yaml (CRDs, RBAC, operator, default IngressClass)

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image: ## build the container images ghcr.io/portico-dev/portico-{proxy,operator}:VERSION
	docker build --target proxy -t ghcr.io/portico-dev/portico-proxy:$(VERSION) .
	docker build --target operator -t ghcr.io/portico-dev/portico-operator:$(VERSION) .

bench: ## criterion benchmarks (matcher, translation) and the load comparison against nginx
	$(CARGO) bench -p portico-api -p portico-translate
	./bench/load.sh
