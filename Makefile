# Rally: `make run` starts the embedded server, `make test` runs every test.
SHELL   := /bin/bash
GO      ?= go
TAGS    := grpcnotrace
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG     := github.com/rallyhq/rally/internal/buildinfo
LDFLAGS := -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT) -X $(PKG).Date=$(DATE)
BUILD   := CGO_ENABLED=0 $(GO) build -trimpath -tags $(TAGS) -ldflags '$(LDFLAGS)'
UPX     ?= 0
IMAGE   ?= rally:$(VERSION)

.PHONY: all build run test test-deps vet bench-coldstart image proto clean

all: build

build: ## static binary in bin/
	$(BUILD) -o bin/rally ./cmd/rally

run: build ## serve on embedded defaults (data in ./rally-data)
	./bin/rally serve --dev

test-deps:
	bash scripts/test-deps.sh

vet:
	$(GO) vet -tags $(TAGS) ./...
	cd deploy/imagebuild && $(GO) vet ./...

test: test-deps vet ## the one test command
	$(GO) test -race -tags $(TAGS) -count=1 ./...
	cd deploy/imagebuild && $(GO) test -count=1 ./...

bench-coldstart: build
	./bin/rally bench coldstart --binary bin/rally --json bench/results/coldstart.json

image: build ## OCI image from scratch, no Docker engine needed
	bash scripts/image.sh bin/rally $(IMAGE) $(UPX)

clean:
	rm -rf bin dist

proto: ## regenerate Go from api/proto (needs protoc, protoc-gen-go, protoc-gen-go-grpc)
	protoc -I api/proto --go_out=api/proto --go_opt=paths=source_relative \
	  --go-grpc_out=api/proto --go-grpc_opt=paths=source_relative $$(find api/proto -name '*.proto')
