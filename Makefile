# The test command: installs the servers the tests need (Debian packages)
# when missing, then runs every test under the race detector with all
# servers required.
GO ?= go
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck

.PHONY: test test-deps check build bench bench-quick bench-smoke

test: test-deps
	DLOCK_TEST_REQUIRE_SERVERS=1 $(GO) test -race -timeout 20m ./...
	cd dlockgocron && DLOCK_TEST_REQUIRE_SERVERS=1 $(GO) test -race -timeout 10m ./...
	cd dlockotel && DLOCK_TEST_REQUIRE_SERVERS=1 $(GO) test -race -timeout 10m ./...

test-deps:
	./scripts/install-test-deps.sh

build:
	$(GO) build ./...

# Static checks: vet, gofmt, staticcheck (installed from the Go proxy when
# missing) and go.mod/go.sum tidiness, for the library, the benchmark
# module, the gocron adapters' module and the OpenTelemetry module.
check:
	$(GO) mod tidy -diff
	cd bench && $(GO) mod tidy -diff
	cd dlockgocron && $(GO) mod tidy -diff
	cd dlockotel && $(GO) mod tidy -diff
	$(GO) vet ./...
	cd bench && $(GO) vet ./...
	cd dlockgocron && $(GO) vet ./...
	cd dlockotel && $(GO) vet ./...
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@[ -x "$(STATICCHECK)" ] || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$(STATICCHECK) ./...
	cd bench && $(STATICCHECK) ./...
	cd dlockgocron && $(STATICCHECK) ./...
	cd dlockotel && $(STATICCHECK) ./...

# Benchmarks beside redsync, bsm/redislock, concurrency.Mutex, zk.Lock and a
# hand-written SQL lock table, on servers the program starts (bench/ is its
# own Go module). Writes docs/bench/RESULTS.md and plots; under 10 minutes on
# 2 cores.
bench: test-deps
	cd bench && $(GO) run ./cmd/dlockbench

# The same scenarios with tiny counts: a run of about half a minute.
bench-quick: test-deps
	cd bench && $(GO) run ./cmd/dlockbench -quick

# The benchmark module's own tests, which run the quick mode end to end.
bench-smoke: test-deps
	cd bench && DLOCK_TEST_REQUIRE_SERVERS=1 $(GO) test -race -count=1 ./...
