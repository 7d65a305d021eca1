# Loom build. `make run` starts Loom with loom.hcl; `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Every directory under plugins/ with a main package becomes bin/plugins/loom-provider-<dir>.
PLUGINS := $(patsubst plugins/%/,%,$(dir $(wildcard plugins/*/main.go)))

.PHONY: all build run test vet fmt-check clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/loom ./core/cmd/loom
	@mkdir -p bin/plugins
	@for p in $(PLUGINS); do \
		echo "$(GO) build -o bin/plugins/loom-provider-$$p ./plugins/$$p"; \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/plugins/loom-provider-$$p ./plugins/$$p || exit 1; \
	done

run: build
	./bin/loom serve --config loom.hcl

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '\.pb\.go$$' || true); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd sdk && $(GO) vet ./...

# Every test: the race detector on the whole module (store, auth, server and
# the CLI run concurrent code), PostgreSQL included (the harness starts a
# throwaway cluster; with CI=true a missing PostgreSQL fails the run).
test: fmt-check vet build
	cd sdk && $(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 ./...

clean:
	rm -rf bin
