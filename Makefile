# The two commands: `make run` and `make test`. Both install what is missing
# (Debian packages via apt-get, Go modules via the module proxy) first.
GO      ?= go
BIN     := bin/pyexecd
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
ARGS    ?=

.PHONY: run test deps test-deps build binary vet bench clean image-test runtimes

# runtimes builds every runtime of runtimes/*.conf (or RUNTIMES="a b")
# into RUNTIME_CACHE (default /var/cache/pyexec/runtimes) with debootstrap
# from Debian's mirror; an unchanged list is found there and not rebuilt.
# docs/operations.md, "Runtimes".
RUNTIMES ?= $(basename $(notdir $(wildcard runtimes/*.conf)))
runtimes:
	./scripts/build-runtime.sh $(RUNTIMES)

deps:
	./scripts/install-deps.sh
	$(GO) mod download

build: deps binary

# binary builds the server only (no system packages): the image uses it.
binary:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/pyexecd

# run serves the shipped runtimes, debian13-ds the default; the first run
# builds them (about 3 minutes, both at once; docs/operations.md "Runtimes").
export PYEXEC_RUNTIMES ?= debian13-ds,debian12
run: build runtimes
	./$(BIN) $(ARGS)

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet:
	./scripts/check-tracked-sizes.sh
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# test-deps adds what only the tests need: promtool, extracted alone from
# Debian's prometheus package (the package would start a Prometheus server).
test-deps:
	./scripts/install-test-deps.sh

# REQUIRE_JAIL=1 turns "no jail here" skips into failures: CI must never
# pass by skipping the sandbox. nsjail is tested when it is on PATH or at
# $$NSJAIL; REQUIRE_NSJAIL=1 makes its absence a failure too. The deploy
# manifests are checked offline in their own module (deploy/check); the Go
# client is a module of its own too (client/: it asks for an older Go).
# REQUIRE_PROMTOOL=1 makes a missing promtool fail TestMetrics.
# The end-to-end suite runs against the default runtime (debian13-ds);
# the runtime tests and the isolation of each shipped runtime need both
# built (REQUIRE_RUNTIMES=1 makes a missing one a failure).
test: deps test-deps vet runtimes
	REQUIRE_JAIL=1 REQUIRE_PROMTOOL=1 REQUIRE_RUNTIMES=1 PYEXEC_TEST_RUNTIMES=debian13-ds $(GO) test -race -count=1 -timeout 30m ./...
	cd deploy/check && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd client && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./... && REQUIRE_JAIL=1 $(GO) test -race -count=1 ./...

# image-test builds the Dockerfile with podman (rootless, from local base
# images) and proves the image works; NSJAIL_SRC=DIR tests the nsjail
# variant built from that source. Needs root on Debian 12 (docs/operations.md).
image-test:
	NSJAIL_SRC="$(NSJAIL_SRC)" ./scripts/image-test.sh

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 40x ./runner/

clean:
	rm -rf bin
