# Spawner's tasks. "make run" starts the all-in-one default; "make test" runs
# every test that CI runs.

GO      ?= go
BIN     := bin
SPAWNER := $(BIN)/spawner
# The lean demo app and sidecar, beside spawner, which then runs it as the
# default app (cmd/spawner-demo).
DEMO    := $(BIN)/spawner-demo
# -s -w drops the symbol table and DWARF: the binary is about a third
# smaller and loads faster; panics still print file:line stack traces.
LDFLAGS ?= -s -w
# Tests that need a control plane read it from here; kube-up writes it.
export SPAWNER_TEST_KUBECONFIG ?= $(CURDIR)/.cache/kube/run/kubeconfig

.PHONY: all build run test test-unit test-integration fuzz vet clean kube-up kube-down

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(SPAWNER) ./cmd/spawner
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(DEMO) ./cmd/spawner-demo

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
# with FUZZTIME=5m. hack/fuzz.sh says why new inputs are not minimized.
FUZZTIME ?= 10s
FUZZMINIMIZETIME ?= 0
fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) bash hack/fuzz.sh

kube-up:
	@bash hack/kube-up.sh

kube-down:
	@bash hack/kube-down.sh

clean:
	rm -rf $(BIN) .spawner

# Container images, FROM scratch around the static binary, so that building
# them pulls nothing. The context holds only the binary and an empty data dir.
DOCKER        ?= docker
IMAGE_CONTEXT := .cache/images

.PHONY: images compose-up compose-down compose-test

## images: spawner:latest (every mode) and spawner-demo:latest (the lean demo
## app, which also runs the sidecar: SPAWNER_SIDECAR_IMAGE=spawner-demo:latest).
images: build
	# data/nats/jetstream exists so that a volume mounted there (the compose
	# profile "cluster") is the unprivileged user's.
	rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)/data/nats/jetstream
	cp $(SPAWNER) $(DEMO) $(IMAGE_CONTEXT)/
	$(DOCKER) build -q -f build/spawner.Dockerfile -t spawner:latest $(IMAGE_CONTEXT)
	$(DOCKER) build -q -f build/demo.Dockerfile -t spawner-demo:latest $(IMAGE_CONTEXT)

## compose-up: the compose stack on 127.0.0.1:8080, detached, once /readyz answers.
compose-up: images
	@bash hack/compose-up.sh

## compose-down: stop the stack and remove its session containers.
compose-down:
	@bash hack/compose-down.sh

## compose-test: end to end through compose, as its own project "spawnertest".
compose-test: images
	SPAWNER_TEST_COMPOSE=1 $(GO) test -count=1 -v -run '^TestCompose' -timeout 20m ./integration/

## bench: build everything, run every benchmark once and rewrite BENCHMARKS.md
## from that run (about ten minutes; needs wrk and nginx on PATH).
.PHONY: bench
bench: build
	$(GO) build ./...
	$(GO) build -o $(BIN)/benchreport ./bench/cmd/benchreport
	$(GO) build -o $(BIN)/benchupstream ./bench/cmd/benchupstream
	./$(BIN)/benchreport -spawner $(SPAWNER) -upstream $(BIN)/benchupstream -out BENCHMARKS.md
