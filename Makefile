# Two commands: `make run` (the mini profile end to end) and `make test` (the test suite).
# Both create .venv, install the suite and make sure the mini data is present first.
PYTHON ?= python3
VENV   ?= .venv
DATA   ?= data
BIN    := $(VENV)/bin
FMNIST := $(DATA)/FashionMNIST/raw/t10k-labels-idx1-ubyte
DEBIAN_FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: run test setup data clean
.DEFAULT_GOAL := run

setup: $(VENV)/.installed

# torch/torchvision are pinned here to the builds this project is tested with (local wheels on
# the dev machines); pyproject.toml accepts a range for other installs.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

data: setup
	@if [ ! -f $(FMNIST) ] && [ ! -d $(DEBIAN_FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist"; \
	    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null)); \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian)," \
	         "or '$(BIN)/python -m benchmark data prepare fashion_mnist --download' with internet"; exit 1; \
	  fi; \
	fi
	$(BIN)/python -m benchmark data prepare fashion_mnist --data-root $(DATA)
	$(BIN)/python -m benchmark data prepare mini_det --data-root $(DATA)

run: data
	$(BIN)/python -m benchmark run --method invp --tasks all --profile mini --data-root $(DATA)

test: data
	BENCHMARK_DATA=$(abspath $(DATA)) $(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache .hypothesis
