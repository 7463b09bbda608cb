# Meridian's build. CI runs `make test` (through .ci/run); see README.md.
SHELL := /bin/bash
GO ?= go
PKG := github.com/meridiandb/meridian
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X $(PKG)/internal/buildinfo.version=$(VERSION) -X $(PKG)/internal/buildinfo.commit=$(COMMIT)
TEST_TIMEOUT ?= 15m

.PHONY: all build lab deps deps-compat fmt fmt-check vet staticcheck lint test test-go test-nonroot check-leaks e2e compat bench bench-proxy bench-consistency clean

all: build

## build: compile bin/meridian
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/meridian ./cmd/meridian

## lab: the main command — install what is missing, build, and run `meridian lab up` (Ctrl-C stops it;
## LAB_ARGS="--detach" returns once it is ready)
lab: deps build
	bin/meridian lab up $(LAB_ARGS)

## deps: install what the tests and the lab need (PostgreSQL from the distribution's packages)
deps:
	@scripts/install-postgres.sh

## deps-compat: install what make compat needs besides (node and npm from the distribution's packages)
deps-compat:
	@scripts/install-node.sh

## fmt: rewrite Go files with gofmt
fmt:
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/
	$(GO) vet -tags compat ./compat/

staticcheck:
	$(GO) tool staticcheck -tags e2e,compat ./...

## lint: gofmt check, go vet, staticcheck
lint: fmt-check vet staticcheck

## test: everything CI checks: lint, the suite as an unprivileged user and as the caller (with the race
## detector), the end-to-end lab test, outside evidence (make compat), then that no test server
## outlived the tests
test: deps lint test-nonroot test-go e2e compat check-leaks

## e2e: drive the real binary: lab up → load → latency → partition → heal → down (about a minute)
e2e:
	$(GO) test -tags e2e -count=1 -timeout 10m -v ./e2e/

## compat: outside evidence: pgx v5's own test suite and node-postgres / postgres.js smoke suites,
## directly and through the proxy in session and transaction mode, checked against
## compat/expected-failures.txt (about 8–16 minutes; runs npm ci in compat/node when needed)
compat: deps deps-compat
	@scripts/compat.sh

test-go:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

## test-nonroot: when root, run the suite again as the unprivileged user "postgres"
test-nonroot:
	@scripts/test-nonroot.sh

check-leaks:
	@scripts/check-leaks.sh

## bench: benchmarks (WAN link throughput, ...)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin

## bench-proxy: pgbench through direct PostgreSQL, `meridian proxy` (default configuration), PgBouncer and
## Pgpool-II, then bar rounds (select-only, 16 clients) of Meridian default vs PgBouncer, vs Meridian with
## auto_prepare on, vs the e04db26 build with auto_prepare off (BENCH_BASELINE_REV) and vs the epoll relay,
## plus pooler memory with 10,000 idle clients; prints a Markdown report and saves it under bench-results/
## (run as root on a fresh Debian/Ubuntu machine: installs PostgreSQL, pgbouncer and pgpool2 if missing;
## BENCH_DURATION, BENCH_CLIENTS, BENCH_BAR_ROUNDS, ... : see scripts/bench-proxy.sh and docs/benchmarks.md)
bench-proxy:
	@scripts/bench-proxy.sh

## bench-consistency: read-your-writes in a two-region lab (64 ms RTT, no apply delay): clients insert a
## row and read it back at once, half in session and half in eventual consistency, side by side
## (RYW_DURATION, default 30s)
RYW_DURATION ?= 30s
BENCH_LAB_DIR ?= /tmp/meridian-bench-consistency
bench-consistency: deps build
	@bin/meridian lab --dir $(BENCH_LAB_DIR) down >/dev/null 2>&1 || true
	@trap 'bin/meridian lab --dir $(BENCH_LAB_DIR) down >/dev/null' EXIT; \
	bin/meridian lab --dir $(BENCH_LAB_DIR) up --detach --regions us-east-1,us-west-2 --first-address 127.0.231.1 && \
	bin/meridian lab --dir $(BENCH_LAB_DIR) read-your-writes --duration $(RYW_DURATION)
