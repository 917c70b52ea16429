# Flotilla's build, test and tool targets.
#
# Build flags are decided here, once:
#   -tags pebblegozstd  Pebble uses pure-Go zstd, with or without cgo, so a
#                       cgo build (which -race needs) does not spend minutes
#                       compiling Pebble's C zstd.
#   CGO_ENABLED=1       only for -race runs (the race detector needs cgo and
#                       gcc); everything else builds with CGO_ENABLED=0.
# Tools are installed at pinned versions into .bin/ (git-ignored).

GO          ?= go
TAGS        := pebblegozstd
BIN         := $(CURDIR)/.bin
GOBUILD     := CGO_ENABLED=0 $(GO) build -tags $(TAGS)
GOTEST      := CGO_ENABLED=0 $(GO) test -tags $(TAGS)
GORACE      := CGO_ENABLED=1 $(GO) test -race -tags $(TAGS)

# Packages with concurrency run under -race in `make test`.
RACE_PKGS   := ./store/... ./scheduler/... ./transport/... ./multiraft/... ./integration/... ./internal/... ./metrics/... ./clock/... ./flotillatest/...
# Every package.
ALL_PKGS    := ./...

STATICCHECK_VERSION      := v0.8.2
PROTOC_GEN_GO_VERSION    := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
BENCHSTAT_VERSION        := v0.0.0-20260908200009-22c9c6c9d4da

# Soak knobs: how many random seeds the randomized tests run, and for how long.
SOAK_SEEDS  ?= 200
SOAK_TIME   ?= 60m

.PHONY: all build test test-unit test-race lint fmt-check vet staticcheck bench bench-workloads soak proto proto-check tools clean demo

all: build

build:
	$(GOBUILD) ./...
	$(GOBUILD) -o $(BIN)/flotilla ./cmd/flotilla

# The README's test command: lint, every test, -race where there is concurrency.
test: lint test-unit test-race

test-unit:
	$(GOTEST) -count=1 -timeout 10m $(ALL_PKGS)
	$(GOTEST) -count=1 -timeout 10m ./integration/ -transport=grpc

test-race:
	$(GORACE) -count=1 -timeout 10m $(RACE_PKGS)
	$(GORACE) -count=1 -timeout 10m ./integration/ -transport=grpc

lint: fmt-check vet staticcheck proto-check

fmt-check:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.bin/*' -not -name '*.pb.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	CGO_ENABLED=0 $(GO) vet -tags $(TAGS) $(ALL_PKGS)

staticcheck: $(BIN)/staticcheck
	CGO_ENABLED=0 $(BIN)/staticcheck -tags $(TAGS) $(ALL_PKGS)

# Micro-benchmarks of the hot paths. Compare runs with benchstat:
#   make bench BENCH_COUNT=10 > old.txt; ...; $(BIN)/benchstat old.txt new.txt
BENCH       ?= .
BENCH_COUNT ?= 1
BENCH_TIME  ?= 1s
bench:
	$(GOTEST) -run '^$$' -bench '$(BENCH)' -benchmem -count $(BENCH_COUNT) -benchtime $(BENCH_TIME) $(ALL_PKGS)

# BENCH.md's workloads, scaled down (see the table's footnote); the full
# runs: .bin/flotilla bench --workload all --json results.json
bench-workloads: build
	$(BIN)/flotilla bench --workload all --quick

# Long randomized runs over many fresh seeds (crash recovery, races,
# cluster faults); any failure prints the -seed that replays it.
soak:
	FLOTILLA_SOAK_SEEDS=$(SOAK_SEEDS) $(GOTEST) -count=1 -timeout $(SOAK_TIME) -run 'Crash|Race|Concurrent|IdleHeartbeat' ./store/... ./integration/...
	FLOTILLA_SOAK_SEEDS=$$(( $(SOAK_SEEDS) / 10 + 1 )) $(GORACE) -count=1 -timeout $(SOAK_TIME) -run 'Crash|Race|Concurrent' $(RACE_PKGS)
	# Frames from a lying peer, stepped into a running cluster's hosts.
	$(GOTEST) -count=1 -run '^$$' -fuzz FuzzStepFrames -fuzztime 5m ./multiraft
	$(GOTEST) -count=1 -run '^$$' -fuzz FuzzFrameDecode -fuzztime 2m ./transport

# A 3-node cluster in one process with 1,000 partitions under load, then
# serving its client API and /metrics until Ctrl-C (DEMO_ARGS to change it).
DEMO_ARGS ?=
demo: build
	$(BIN)/flotilla demo $(DEMO_ARGS)

# Regenerates the checked-in protobuf code, with Go alone: internal/protogen
# compiles the .proto files with protocompile (pinned in go.mod) and runs
# the Go plugins, installed at pinned versions, as protoc would. raftpb's
# messages are imported as the raft module registers them ("raft.proto").
PROTO_OUT ?= proto
proto: $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	$(GO) mod download go.etcd.io/raft/v3
	CGO_ENABLED=0 $(GO) run ./internal/protogen -I proto -I "$$($(GO) list -m -f '{{.Dir}}' go.etcd.io/raft/v3)/raftpb" \
		-out $(PROTO_OUT) -param paths=source_relative -plugin $(BIN)/protoc-gen-go -plugin $(BIN)/protoc-gen-go-grpc \
		$$(find proto -name '*.proto' | sort)

# Checks that the checked-in generated code is what `make proto` makes.
proto-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf '"$$tmp" EXIT && \
	$(MAKE) --no-print-directory proto PROTO_OUT=$$tmp >/dev/null && \
	for f in $$(cd $$tmp && find . -name '*.go'); do \
		cmp -s $$tmp/$$f proto/$$f || { echo "proto/$$f is stale: run make proto"; exit 1; }; \
	done && echo "generated protobuf code is up to date"

tools: $(BIN)/staticcheck $(BIN)/benchstat $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc

$(BIN)/staticcheck:
	GOBIN=$(BIN) CGO_ENABLED=0 $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(BIN)/benchstat:
	GOBIN=$(BIN) CGO_ENABLED=0 $(GO) install golang.org/x/perf/cmd/benchstat@$(BENCHSTAT_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) CGO_ENABLED=0 $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) CGO_ENABLED=0 $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

clean:
	rm -rf $(BIN)
