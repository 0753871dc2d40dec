# Short entry points. Each installs what is missing (as root), builds, and runs.
#   make demo   - build everything and run the main job on the example Debian image
#   make check  - build everything and run every test (unit and integration)
#   make bench  - run the benchmarks side by side with their baselines
BUILD ?= build
IMAGE := $(BUILD)/images/debian-bookworm.sqsh
JOBS ?= $(shell nproc)

.PHONY: all deps build image demo check unit bench clean
all: build

deps:
	scripts/install-deps.sh build run image test

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

$(IMAGE):
	examples/images/build-debian.sh $@

image: deps $(IMAGE)

demo: build image
	scripts/demo.sh $(BUILD) $(IMAGE)

unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit -j $(JOBS)

check: build image
	scripts/install-deps.sh slurm bench
	tests/run-all.sh $(BUILD) $(IMAGE)

bench: build image
	scripts/install-deps.sh bench
	tests/bench/run-all.sh $(BUILD) $(IMAGE)

clean:
	rm -rf $(BUILD)
