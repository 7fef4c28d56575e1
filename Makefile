# Spawner's tasks. "make run" starts the all-in-one default; "make test" runs
# every test that CI runs.

GO      ?= go
BIN     := bin
SPAWNER := $(BIN)/spawner
# Tests that need a control plane read it from here; kube-up writes it.
export SPAWNER_TEST_KUBECONFIG ?= $(CURDIR)/.cache/kube/run/kubeconfig

.PHONY: all build run test test-unit test-integration fuzz vet clean kube-up kube-down

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(SPAWNER) ./cmd/spawner

## run: Spawner on its embedded default (embedded NATS, process backend, demo app) on :8080.
run: build
	./$(SPAWNER)

## test: vet, unit tests, fuzz smoke runs and the end-to-end suite.
test: vet test-unit fuzz test-integration

vet:
	$(GO) vet ./...

test-unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

test-integration:
	$(GO) test -count=1 -timeout 30m ./integration/...

# Each fuzz target runs briefly so CI catches regressions; run longer by hand
# with FUZZTIME=5m.
FUZZTIME ?= 10s
fuzz:
	@set -e; for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./tools/'); do \
		dir=$$(dirname $$spec); \
		for f in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$spec | sed 's/^func //'); do \
			echo "fuzz $$dir $$f"; \
			$(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$dir; \
		done; \
	done

kube-up:
	@bash hack/kube-up.sh

kube-down:
	@bash hack/kube-down.sh

clean:
	rm -rf $(BIN) .spawner
