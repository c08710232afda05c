# The test command: installs the servers the tests need (Debian packages)
# when missing, then runs every test under the race detector with all
# servers required.
GO ?= go
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck

.PHONY: test test-deps check build

test: test-deps
	DLOCK_TEST_REQUIRE_SERVERS=1 $(GO) test -race -timeout 20m ./...

test-deps:
	./scripts/install-test-deps.sh

build:
	$(GO) build ./...

# Static checks: vet, gofmt, staticcheck (installed from the Go proxy when missing).
check:
	$(GO) vet ./...
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@[ -x "$(STATICCHECK)" ] || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$(STATICCHECK) ./...
