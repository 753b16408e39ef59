# The two commands: `make run` and `make test`. Both install what is missing
# (Debian packages via apt-get, Go modules via the module proxy) first.
GO      ?= go
BIN     := bin/pyexecd
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
ARGS    ?=

.PHONY: run test deps build vet bench clean

deps:
	./scripts/install-deps.sh
	$(GO) mod download

build: deps
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/pyexecd

run: build
	./$(BIN) $(ARGS)

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# REQUIRE_JAIL=1 turns "no jail here" skips into failures: CI must never
# pass by skipping the sandbox.
test: deps vet
	REQUIRE_JAIL=1 $(GO) test -race -count=1 -timeout 20m ./...

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 40x ./runner/

clean:
	rm -rf bin
