# pgwarden — every target installs what it needs by itself (npm ci, tsc build).
SHELL := /bin/bash
.DEFAULT_GOAL := help
NODE_MODULES_STAMP := node_modules/.package-lock.json

.PHONY: help deps system-deps build test lint format demo bench soak clean

help:
	@echo "make demo    run the sidecar in front of an embedded PostgreSQL (needs only Node.js 20)"
	@echo "make test    build and run the test suite (starts its own PostgreSQL 15 and nats-server)"
	@echo "make bench   pgbench direct vs bare pipe vs sidecar (+policy, masked), policy decision and collector ingest benchmarks"
	@echo "make soak    the 10,000-statement audit fault proof (nats-server and collector killed mid-run)"
	@echo "make lint    biome (format + lint) and the TypeScript compiler"

$(NODE_MODULES_STAMP): package.json package-lock.json policy/package.json sidecar/package.json collector/package.json operator/package.json cli/package.json
	@command -v node >/dev/null || { echo "Node.js 20+ is required: https://nodejs.org or apt-get install nodejs npm"; exit 1; }
	npm ci --no-audit --no-fund
	@touch $@

deps: $(NODE_MODULES_STAMP)

# Debian packages the tests drive as real peers (PostgreSQL server, nats-server, psql/pgbench, psycopg2).
system-deps:
	@bash scripts/system-deps.sh

build: deps
	npx tsc -b

test: build system-deps
	npx vitest run

lint: deps
	npx biome check .
	npx tsc -b

format: deps
	npx biome check --write .

demo: build
	bin/pgwarden demo

bench: build system-deps
	node bench/run.mjs
	npx vitest bench --run policy/bench/decide.bench.ts
	node policy/bench/decide-steady.mjs
	PGWARDEN_BENCH=1 npx vitest run collector/src/bench

soak: build system-deps
	PGWARDEN_SOAK=1 npx vitest run test/audit-faults

clean:
	rm -rf */dist test-results
