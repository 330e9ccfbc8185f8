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
OPERATOR_IMAGE ?= rally-operator:$(VERSION)

.PHONY: all build run test test-deps vet bench-coldstart image proto crds clean

all: build

build: ## static binary in bin/
	$(BUILD) -o bin/rally ./cmd/rally
	$(BUILD) -o bin/rally-operator ./cmd/rally-operator

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

image: build ## OCI images from scratch (rally and rally-operator), no Docker engine needed
	bash scripts/image.sh bin/rally $(IMAGE) $(UPX)
	bash scripts/image.sh bin/rally-operator $(OPERATOR_IMAGE) 0

clean:
	rm -rf bin dist

proto: ## regenerate Go from api/proto (needs protoc, protoc-gen-go, protoc-gen-go-grpc)
	protoc -I api/proto --go_out=api/proto --go_opt=paths=source_relative \
	  --go-grpc_out=api/proto --go-grpc_opt=paths=source_relative $$(find api/proto -name '*.proto')

# Descriptions are left out (maxDescLen=0): the embedded pod template would
# otherwise make the CRD too large for a client-side `kubectl apply`.
CONTROLLER_GEN ?= $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
crds: ## regenerate deploy/crds and the deepcopy code from api/k8s
	$(CONTROLLER_GEN) crd:generateEmbeddedObjectMeta=true,maxDescLen=0 object \
	  paths=./api/k8s/... output:crd:artifacts:config=deploy/crds
