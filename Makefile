# govmm: build, test and measure.
#   make build    -> bin/govmm
#   make kernels  -> testdata/kernels/bin/*.elf (tiny test kernels, gcc + ld)
#   make run      -> build everything and boot the hello tiny kernel
#   make test     -> the whole test suite (what CI runs)
#   make bench    -> measurements, as ratios within one run
#   make lint     -> gofmt + go vet
#   make linux    -> the project's Linux guest kernel (cached outside the repo)

GO      ?= go
GOFLAGS ?=
BIN     := bin/govmm
TEST_TIMEOUT ?= 60m

.PHONY: all build kernels run test bench lint linux clean

all: build kernels

# A static binary: no dynamic loader at start-up (about 1 ms of govmm's
# time to first guest byte).
build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS) -o $(BIN) ./cmd/govmm

kernels:
	$(MAKE) -C testdata/kernels

run: build kernels
	./$(BIN) run --kernel testdata/kernels/bin/hello.elf --cmdline "console=ttyS0 hello.exit=0"

test: build kernels
	$(GO) test $(GOFLAGS) -timeout $(TEST_TIMEOUT) ./... ./testdata/linux/mkinitramfs

bench: build kernels
	$(MAKE) -C testdata/bench
	$(GO) test $(GOFLAGS) -run '^$$' -bench . -benchtime 20x ./...
	./$(BIN) bench startup --kernel testdata/kernels/bin/hello.elf
	./$(BIN) bench notifiers --devices 15 --queues 64

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

linux:
	$(MAKE) -C testdata/linux

clean:
	rm -rf bin testdata/kernels/bin
