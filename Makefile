# otelbee — see README.md. `sudo make run` runs the agent; `make test` runs every test tier.
SHELL := /bin/bash
GO ?= go
BUILD := build
BIN := $(BUILD)/bin/otelbee
# Heavy downloads and builds (the collector, kernels) live outside the checkout, so a fresh
# clone (CI) reuses them.
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/otelbee
OTELCOL := $(CACHE)/otelcol/otelcol-otelbee
KUBE_APISERVER := $(CACHE)/kube-apiserver/kube-apiserver
IMAGE ?= localhost/otelbee:$(VERSION)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/otelbee/otelbee/agent.Version=$(VERSION)
# Debian packages the build and the tests use (clang/llvm/libbpf for `make generate`).
APT_PACKAGES := clang llvm libbpf-dev bpftool iproute2 prometheus qemu-system-x86 cpio curl \
	dnsmasq-base dnsutils nginx-light wrk dnsperf python3 podman etcd-server gnutls-bin nghttp2-client postgresql mariadb-server mariadb-client \
	redis-server redis-tools memcached python3-pymemcache kcat nodejs openssl
GENERATED := $(shell git ls-files '*_bpfel.go' '*_bpfel.o' 2>/dev/null)

.PHONY: all deps generate check-generated build image run test test-unit test-e2e vmtest bench lint install otelcol kube-apiserver clean

all: build

# Installs missing Debian packages when run as root; elsewhere it only reports.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing: $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else echo "missing packages (run as root to install): $$missing"; fi; \
	fi

# Regenerates vmlinux-based BPF objects and Go bindings with bpf2go.
generate:
	$(GO) generate ./...

# Fails when the committed generated files differ from a fresh generation.
check-generated: generate
	@git diff --exit-code --stat -- $(GENERATED) || { echo "generated BPF files differ from the committed ones: run 'make generate' and commit"; exit 1; }

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/otelbee

# The container image (Dockerfile), with podman or buildah: no Docker engine and
# no base-image pull (the static binary is copied onto an empty base).
image: build
	@if command -v podman >/dev/null; then b="podman build"; \
	elif command -v buildah >/dev/null; then b="buildah bud"; \
	else echo "make image: needs podman or buildah (apt-get install podman)"; exit 1; fi; \
	$$b --pull=never --no-cache --build-arg VERSION=$(VERSION) -t $(IMAGE) -f Dockerfile . && echo "built $(IMAGE)"

run: build
	$(BIN) $(ARGS)

otelcol:
	scripts/build-otelcol.sh $(CACHE)/otelcol

# A real kube-apiserver for the Kubernetes e2e test (cached; etcd is Debian's etcd-server).
kube-apiserver:
	scripts/build-kube-apiserver.sh $(CACHE)/kube-apiserver

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	promtool check rules dashboards/alerts/*.yaml

# Unit and privileged tests (the privileged ones skip with a reason when not root).
# -p 1: the privileged capture tests assert exact counts at full load-generator speed (h2load,
# redis-benchmark); two of them side by side on this 2-core machine starved each other's drain
# (records lost, counted).
test-unit:
	$(GO) test -p 1 -count=1 ./agent/... ./collectors/... ./process/... ./exporters/... ./cmd/... ./k8smeta/... ./charts/...

# End-to-end tests against the built binary, a real Prometheus and a real OpenTelemetry Collector.
# -p 1: one package at a time, so that e2e/vmtest's self-test (two QEMU VMs under TCG, a core each)
# does not run beside the e2e package, whose tests must not depend on the machine's load.
test-e2e: build otelcol kube-apiserver
	OTELBEE_BIN=$(CURDIR)/$(BIN) OTELCOL_BIN=$(OTELCOL) KUBE_APISERVER_BIN=$(KUBE_APISERVER) $(GO) test -p 1 -count=1 -timeout 40m ./e2e/...

vmtest:
	$(GO) run ./e2e/vmtest/cmd/vmtest -cache $(CACHE)/vmtest -jobs e2e/vmtest/jobs/matrix.json -progstats docs/kernels.md

test: deps check-generated lint test-unit test-e2e vmtest

bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./collectors/... ./exporters/...
	$(GO) run ./bench/tcpconn -agent $(BIN) -rate 20000 -duration 10s
	# Process churn (issue 16): series, /metrics size, scrape time, RSS; the per-process identity of before.
	$(GO) run ./bench/churn -agent $(BIN)
	$(GO) run ./bench/churn -agent $(BIN) -instance pid
	# Sizing a node (issue 16): agent CPU and RSS at three points of connections/s, requests/s, processes/min, series.
	$(GO) run ./bench/sizing -agent $(BIN)
	# HTTP overhead (issue 15): 1 % and every request a span, each with and without --bpf.stats (as users
	# run the agent: no two clock reads per program run), Go server and nginx, all in the same alternating
	# rounds: the ratios, CPU, BPF runs against the floor, RSS under load (anon + file) and peak, both charts.
	$(GO) run ./bench/httpoverhead -agent $(BIN) -matrix -svg docs/http-overhead.svg -svg-sampled docs/http-overhead-sampled.svg

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)/usr/local/bin/otelbee
	install -D -m 0644 packaging/otelbee.service $(DESTDIR)/etc/systemd/system/otelbee.service

clean:
	rm -rf $(BUILD)
