# wsgate: see README.md. Every target is bounded in time; load only ever goes to loopback.
GO        ?= go
BIN       := bin
PKGS      := ./...
FUZZTIME  ?= 5s
BENCH     ?= default
TLS       ?= 0
ifeq ($(TLS),1)
LISTEN    ?= 127.0.0.1:8443
else
LISTEN    ?= 127.0.0.1:8080
endif
DEMO      ?= 127.0.0.1:3000
LOKI      ?= 127.0.0.1:3100

.PHONY: all build test vet lint fuzz bench bench-go bench-parse bench-deps run clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet $(PKGS)

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# make test: vet, gofmt, the race-enabled test suite, then every fuzz target briefly on its seed corpus.
test: lint
	$(GO) test -race -count=1 -timeout 12m $(PKGS)
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

# Each fuzz target runs for FUZZTIME on top of its checked-in corpus (testdata/fuzz/<Target>).
fuzz:
	bash .ci/fuzz $(GO) $(FUZZTIME) $(PKGS)

# Go micro-benchmarks (allocation counts included); compare runs with benchstat.
bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem -count=6 $(PKGS)

# httpparse against net/http on the same heads, compared with benchstat.
bench-parse:
	bash bench/scripts/parsecmp.sh

bench-deps:
	bash bench/deps.sh

# make bench [BENCH=quick|default]: wsgate against nginx, HAProxy, httputil and direct.
bench: build
	$(GO) run ./bench/cmd/wsbench -suite=$(BENCH)

# make run [TLS=1]: wsgate with two routes in front of the demo's Grafana-like and Loki-like
# backends, on loopback (TLS=1: https and wss with a generated local CA; the banner says how to
# trust it).
run: build
	TLS=$(TLS) bash cmd/wsgate-demo/run.sh $(BIN) $(LISTEN) $(DEMO) $(LOKI)

clean:
	rm -rf $(BIN)
