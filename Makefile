# Loom build. `make run` starts Loom with loom.hcl; `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Every directory under plugins/ with a main package becomes bin/plugins/loom-provider-<dir>.
PLUGINS := $(patsubst plugins/%/,%,$(dir $(wildcard plugins/*/main.go)))

.PHONY: all build run test vet fmt-check clean proto proto-check bench soak fuzz

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/loom ./core/cmd/loom
	@mkdir -p bin/plugins
	@for p in $(PLUGINS); do \
		echo "$(GO) build -o bin/plugins/loom-provider-$$p ./plugins/$$p"; \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/plugins/loom-provider-$$p ./plugins/$$p || exit 1; \
	done
	cd examples/echo-provider && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o ../../bin/plugins/loom-provider-echo .

run: build
	./bin/loom serve --config loom.hcl

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '\.pb\.go$$' || true); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd sdk && $(GO) vet ./...
	cd examples/echo-provider && $(GO) vet ./...

# Every test: the race detector on the whole module (store, auth, server and
# the CLI run concurrent code), PostgreSQL included (the harness starts a
# throwaway cluster; with CI=true a missing PostgreSQL fails the run).
test: fmt-check vet proto-check build
	cd sdk && $(GO) test -race -count=1 ./...
	cd examples/echo-provider && $(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 -timeout 30m ./...

clean:
	rm -rf bin

# Overhead benchmark: mock upstream direct vs a bare reverse proxy (loom-floor)
# vs Loom (SQLite, and PostgreSQL when initdb/pg_ctl exist), 1,000 slow
# streams' RSS, and the trace store's throughput. ~3 minutes.
# Extra flags: make bench BENCH_FLAGS='-duration 30s -postgres=false'.
bench: build
	$(GO) build -o bin/loom-mock ./core/cmd/loom-mock
	$(GO) build -o bin/loom-bench ./core/cmd/loom-bench
	$(GO) build -o bin/loom-floor ./core/cmd/loom-floor
	$(GO) run ./core/cmd/loom-benchsuite $(BENCH_FLAGS)

# Fault soak on PostgreSQL: 100,000 requests (70 % streamed) with clients
# leaving at a random byte, upstream 5xx and resets mid-stream, an upstream
# slower than the timeout, plugin SIGKILLs and PostgreSQL stopped for 30 s.
# `make test` runs a short version (TestSoak with its defaults).
SOAK_FLAGS ?= -soak.requests=100000 -soak.outage=30s
soak: build
	$(GO) test -count=1 -timeout 60m -run '^TestSoak$$' -v ./core/cmd/loom -args $(SOAK_FLAGS)

# Protocol code generation, with pinned tools: protoc from Debian bookworm's
# protobuf-compiler, the Go generators at fixed versions. The output is
# committed; proto-check (part of make test) fails when it is stale.
PROTOC_VERSION             := 3.21.12
PROTOC_GEN_GO_VERSION      := v1.36.11
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
TOOLS := $(CURDIR)/bin/tools

proto:
	@protoc --version | grep -q 'libprotoc $(PROTOC_VERSION)' || { echo "need protoc $(PROTOC_VERSION) (apt-get install protobuf-compiler), have: $$(protoc --version 2>&1)"; exit 1; }
	cd sdk && GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	cd sdk && GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	protoc -I schema/proto \
		--plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --go_out=sdk --go_opt=module=github.com/loom-runtime/loom/sdk \
		--plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc --go-grpc_out=sdk --go-grpc_opt=module=github.com/loom-runtime/loom/sdk \
		schema/proto/loom/provider/v1/provider.proto

proto-check: proto
	@git diff --exit-code -- sdk/internal || { echo "generated protocol code is stale: run make proto and commit"; exit 1; }

# Fuzzing: every fuzz target in the repository, $(FUZZTIME) each, one after
# the other, stopping at the first failure. Each runs from its own module
# (sdk/ is one); seed corpora are in testdata/fuzz/<Target>/, where a
# crashing input is written too (keep it there once fixed). Go 1.26's fuzz
# coordinator can end a run with a bare "context deadline exceeded" at the
# -fuzztime deadline on a loaded machine (golang/go#75804, fixed in Go
# 1.27): without a failing input or a failed seed, that is not a failure.
FUZZTIME ?= 10s

fuzz:
	@log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for f in $$(find . -name '*_test.go' -not -path './.git/*' -not -path '*/testdata/*' | sort | xargs grep -l '^func Fuzz'); do \
		dir=$$(dirname $$f); mod=$$dir; \
		while [ ! -f $$mod/go.mod ]; do mod=$$(dirname $$mod); done; \
		pkg=.$${dir#$$mod}; \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "cd $$mod && $(GO) test -run '^$$' -fuzz '^$$t$$' -fuzztime $(FUZZTIME) $$pkg"; \
			if (cd $$mod && $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg) >$$log 2>&1; then \
				tail -n 3 $$log; \
			elif grep -q 'context deadline exceeded' $$log && ! grep -q -e 'Failing input written' -e "FAIL: $$t/" $$log; then \
				tail -n 5 $$log; echo "$$t: stopped by the fuzztime deadline race (golang/go#75804), no failing input: passed"; \
			else \
				cat $$log; exit 1; \
			fi; \
		done; \
	done
