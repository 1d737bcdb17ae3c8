# auditwatch: `make demo` runs the main job, `make test` the whole test suite (both install what they need).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-tools lint binaries image image-tools bench-image bench bench-hunt bench-packs bench-operator bench-writes soak crds clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/auditwatch demo

lint: $(STAMP)
	$(BIN)/ruff check --no-cache operator tests bench  # no cache: import order depends on other files
	$(BIN)/ruff format --no-cache --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache  # the layers contract in pyproject.toml

# The e2e tests need kube-apiserver & co.: built once from the Go module proxy (~6 min), then cached.
binaries: $(STAMP)
	$(BIN)/auditwatch cluster build

# Debian's buildah, podman, runc and mmdebstrap build and run the operator's image (make image, the e2e
# tests); installed when missing (as root, as CI runs).
IMAGE_TOOLS := buildah podman runc mmdebstrap
image-tools:
	@for tool in $(IMAGE_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	[ -z "$$missing" ] || apt-get install -y -q $(IMAGE_TOOLS) uidmap >/dev/null \
	  || (apt-get update -q >/dev/null && apt-get install -y -q $(IMAGE_TOOLS) uidmap >/dev/null)

# Maven fetches Apache Kafka's broker (the Event Hubs tests' stand-in) from Maven Central; installed when missing.
test-tools:
	@command -v mvn >/dev/null || apt-get install -y -q maven >/dev/null \
	  || (apt-get update -q >/dev/null && apt-get install -y -q maven >/dev/null)

# The unit tests run twice: once more with the Python candidate search that builds without a C compiler.
test: lint binaries image-tools test-tools
	AUDITWATCH_NATIVE=0 $(BIN)/pytest -q tests/unit
	$(BIN)/pytest

# The operator's image from the Dockerfile, without Docker: buildah on a Debian base from mmdebstrap (README).
IMAGE_ARCHIVE ?= dist/auditwatch-$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml).oci.tar
image: $(STAMP) image-tools
	$(BIN)/auditwatch cluster image --output $(IMAGE_ARCHIVE)

# The image's size packed and unpacked, start to Ready and RSS at rest, run as the DaemonSet's pod runs.
bench-image: binaries image-tools
	$(BIN)/python bench/image_bench.py

bench: $(STAMP)
	$(BIN)/python bench/seed_vs_jq.py

bench-packs: $(STAMP)
	$(BIN)/python bench/packs_bench.py

bench-hunt: $(STAMP)
	$(BIN)/python bench/hunt_bench.py

# Not bench/operator.py: a script's directory comes first on sys.path, and that name hides the stdlib's operator.
bench-operator: binaries
	$(BIN)/python bench/operator_bench.py --flood

# What a finding write costs kube-apiserver and etcd at 20, 50, 100 and 200 writes/s (the budget's default).
bench-writes: binaries
	$(BIN)/python bench/write_cost_bench.py

# Minutes of the pack on an HA control plane while nodes are replaced, replicas killed, API servers restarted
# (SOAK_MINUTES=120 where you have the hours); exits 1 when a count is not exact or a gone shard not retired.
SOAK_MINUTES ?= 6
soak: binaries
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

crds: $(STAMP)
	$(BIN)/auditwatch crds
	$(BIN)/auditwatch chart

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
