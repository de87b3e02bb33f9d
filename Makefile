# QuorumKV developer entry points. `make help` lists them.
# The two a newcomer needs: `make demo` (a cluster with the operator and a sample KVCluster)
# and `make test` (everything CI runs: lint, unit, integration, linearizability, e2e).

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install-dev tools lint unit integration jepsen test-local e2e test demo cluster \
        cluster-down local bench failover clean

help:  ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	bash e2e/tools/ensure-host-packages.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install-dev: $(STAMP)  ## create .venv with the project and its dev tools

tools:  ## the pinned Helm that the chart tests render with (built once into the cache)
	bash e2e/tools/ensure-go-tools.sh helm

lint: $(STAMP)  ## ruff, mypy (strict) and the import-layer contracts
	$(VENV)/bin/ruff check service operator e2e bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: $(STAMP) tools  ## fast tests: pure protocol, simulation, checker, operator builders
	$(PYTEST) -m "not integration and not jepsen and not e2e" service operator

integration: $(STAMP)  ## real replica processes on loopback, with kill -9 and SIGSTOP
	$(PYTEST) -m "integration" service

jepsen: $(STAMP)  ## the linearizability test with a nemesis (needs root for iptables)
	$(PYTEST) -m "jepsen" service

test-local: $(STAMP) tools  ## every test that needs no Kubernetes
	$(PYTEST) service operator

cluster: $(STAMP)  ## bring up a cluster (kind if usable, else the local one); prints KUBECONFIG
	@bash e2e/cluster.sh up

cluster-down:  ## tear the cluster down
	bash e2e/cluster.sh down

e2e: $(STAMP)  ## the end-to-end suite on a real cluster (brought up if needed)
	bash e2e/run.sh

test: lint test-local e2e  ## everything, as CI runs it

demo: $(STAMP)  ## a cluster, the operator (Helm), a sample KVCluster, a write and a read
	bash e2e/demo.sh

local: $(STAMP)  ## three replicas on 127.0.0.1:7000-7002, no Kubernetes (Ctrl-C stops)
	$(VENV)/bin/quorumkv local --replicas 3

bench: $(STAMP)  ## QuorumKV vs etcd, same driver (wrk), results in bench/RESULTS.md
	$(PY) bench/run.py

failover: $(STAMP)  ## QuorumKV vs etcd: a member killed / paused under writes, bench/FAILOVER.md
	$(PY) bench/failover.py

clean:  ## remove the virtualenv and test artifacts (not the cluster cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache e2e/_artifacts
