# certmesh — two commands on a fresh machine: `make run` and `make test`.
GO       ?= go
TOOLS    ?= $(HOME)/.cache/certmesh/bin
RUN_DIR  ?= .certmesh/dev
FUZZTIME ?= 5s
export CERTMESH_TOOLS := $(TOOLS)
export PATH := $(TOOLS):$(PATH)

.PHONY: all build run demo test tools lint unit alerts fuzz bench bench-bulk drill proto

all: build

build:
	$(GO) build -o bin/certmesh ./cmd/certmesh

# certmesh's main job on one machine, no Kubernetes.
run: build
	./bin/certmesh dev --dir $(RUN_DIR) --trust-domain example.org --registrations deploy/dev/registrations.yaml

tools:
	bash test/tools/install.sh

test: tools lint unit alerts fuzz

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...

unit:
	$(GO) test -count=1 -timeout 30m ./...

# Regenerates the gRPC code of certmesh's own services from their .proto
# (needs protoc: apt-get install protobuf-compiler; the plugins are pinned).
proto:
	sh ca/wire/generate.sh

# The alert rules are checked with Prometheus' own parser, in a module of
# its own so that Prometheus' dependencies stay out of certmesh's.
alerts:
	cd test/alerts && $(GO) test -count=1 ./...

# Each fuzz target runs briefly; `make fuzz FUZZTIME=5m FUZZMINIMIZETIME=60s` digs deeper.
# The brief run does not minimise inputs: the toolchain can fail a run whose time
# ends while it minimises (context deadline exceeded, no input written; see
# golang/go#56238 and #52569), and a failing input is written all the same, only
# unminimised. A failed run prints the fuzzer's output and any failing input; a run
# that failed without writing one (an engine error, not a finding) is repeated once.
FUZZ_TARGETS = ./ca:FuzzParseCSR ./ca:FuzzLeafTBS ./identity:FuzzParseRegistrations ./sds/workload:FuzzValidateJWTSVID ./edge/edgeconfig:FuzzParse ./sds/envoy:FuzzDiscoveryRequest ./ca/service:FuzzBearerToken ./sds/inject:FuzzAdmissionReview ./identity/k8s:FuzzParseClaims ./edge/ingress:FuzzParseIssuers ./ca/wire:FuzzAckReport
FUZZMINIMIZETIME ?= 0
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  for try in 1 2; do \
	    log=$$(mktemp); \
	    if $(GO) test $$pkg -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) >$$log 2>&1; then rm -f $$log; break; fi; \
	    tail -n 80 $$log; rm -f $$log; \
	    found=$$(git ls-files --others $$pkg/testdata/fuzz/$$fn 2>/dev/null); \
	    for c in $$found; do echo "== failing input $$c"; cat $$c; done; \
	    if [ -n "$$found" ] || [ $$try = 2 ]; then exit 1; fi; \
	    echo "fuzz $$pkg $$fn: the fuzzer failed without a failing input (an engine error); running it once more"; \
	  done; \
	done

# BENCHMARKS.md: every figure with its method and a baseline from the same run.
bench: tools
	$(GO) run ./test/bench -o BENCHMARKS.md

# Only the bulk-issuance section (about two minutes), spliced into BENCHMARKS.md.
bench-bulk:
	$(GO) run ./test/bench -only bulk -splice -o BENCHMARKS.md

# The encrypted chain on one machine (Pebble, certmesh dev, ghostunnel
# proxies as two uids, a plain app); prints the curl line to paste. Needs root.
demo: tools
	$(GO) test -c -o bin/e2e.test ./test/e2e
	./bin/e2e.test -test.run '^TestDemo$$' -test.timeout 0 -e2e.demo

# The reliability drills in full (a root rotation through retirement takes
# about 8 minutes) and longer fuzzing; writes test/DRILLS.md.
drill: tools
	$(GO) test ./test/drills -count=1 -timeout 60m -v -drill.full -drill.report $(CURDIR)/test/DRILLS.md
	$(MAKE) fuzz FUZZTIME=2m
