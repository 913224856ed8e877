# Entry points. Logic lives in hack/ scripts; these targets only name them.
# `make` alone lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

.PHONY: help demo test test-unit lint cluster-up cluster-down images bench

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9-]*:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

demo: ## set up (local cluster, or the current minikube) and run the seven-layer demo; LAYER=3 for one, LAYER=leak|pool|breaker|zombie|ops for the ops healers
	hack/demo.sh

test: ## set up and run every test: lint, unit, cluster tests and e2e on the local cluster
	hack/test.sh all

test-unit: ## Rust tests that need no cluster
	hack/test.sh unit

lint: ## rustfmt, clippy -D warnings, shellcheck, actionlint, helm lint, promtool
	hack/lint.sh

cluster-up: ## start the local single-node cluster (root; builds Kubernetes on first use)
	hack/cluster.sh up

cluster-down: ## stop the local cluster and delete its state
	hack/cluster.sh down

images: ## build the app and controller images and import them into the local cluster
	hack/image.sh --import project

bench: ## run the benchmarks under bench/ (figures as ratios against a baseline in the same run)
	bench/run.sh
