# Entry points. Logic lives in hack/ scripts; these targets only name them.
# `make` alone lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

.PHONY: help demo test test-unit test-cluster lint cluster-up cluster-down images bench

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9-]*:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

demo: ## set up (local cluster, or the current minikube) and run the seven-layer demo; LAYER=3 for one, LAYER=leak|pool|breaker|zombie|ops for the ops healers
	hack/demo.sh

test: ## set up and run every test: make lint, test-unit, then test-cluster on the local cluster
	hack/test.sh all

test-unit: ## tests that need no cluster: Rust unit and integration tests, a live Prometheus
	hack/test.sh unit

test-cluster: ## against the cluster in KUBECONFIG (local or minikube): images, cluster tests, e2e, demo
	hack/test.sh cluster

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
