# `make demo`: the workflow on the embedded default config; `make test`: the test suite.
# Both create the environments first when they are missing.

PYTHON ?= python3
# OneFlow 0.9.0 needs Python <= 3.10: the first python3.10 that runs (a pyenv shim may not),
# or name one with PYTHON310=/path/to/python3.10
PYTHON310 ?= $(shell for p in python3.10 $(HOME)/.pyenv/versions/3.10*/bin/python3.10 /root/.pyenv/versions/3.10*/bin/python3.10; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)

VENV := .venv
OFVENV := .venv-oneflow
TRTVENV := .venv-tensorrt
# Snakemake's SLURM executor plugin, in a folder of its own (put on PYTHONPATH for a cluster run)
CLUSTERLIB := .venv-cluster

.PHONY: env env-main env-oneflow env-cluster env-tensorrt env-tensorrt-nvidia env-gpu wheelhouse demo report test lint mutation clean

env: env-main env-oneflow

env-main: $(VENV)/.installed

$(VENV)/.installed: envs/requirements-main.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r envs/requirements-main.txt
	touch $@

# Without a Python 3.10 this says so and carries on: the OneFlow rules then fail with one
# sentence each, and everything else still runs.
env-oneflow:
	@if [ -z "$(PYTHON310)" ]; then \
		echo "infbench: no Python 3.10 found, so the OneFlow environment was not built: install python3.10 or run make PYTHON310=/path/to/python3.10"; \
	else \
		$(MAKE) --no-print-directory $(OFVENV)/.installed; \
	fi

$(OFVENV)/.installed: envs/requirements-oneflow.txt
	$(PYTHON310) -m venv $(OFVENV)
	$(OFVENV)/bin/pip install --quiet -r envs/requirements-oneflow.txt
	touch $@

# Snakemake's SLURM executor (profiles/slurm), never part of .venv: importable, it asks SLURM
# for its settings at every Snakemake start (seconds where no controller answers). Its
# dependencies are .venv's; a cluster run puts the folder on PYTHONPATH (docs/cluster.md).
env-cluster: $(CLUSTERLIB)/.installed

$(CLUSTERLIB)/.installed: envs/requirements-cluster.txt $(VENV)/.installed
	rm -rf $(CLUSTERLIB)
	$(VENV)/bin/pip install --quiet --no-deps --target $(CLUSTERLIB) -r envs/requirements-cluster.txt
	touch $@

# TensorRT (about 2 GB of libraries, a GPU to use them): never part of `make env`.
# TensorRT 8.6.0 from PyPI on a Python 3.10, found like OneFlow's.
env-tensorrt:
	@if [ -z "$(PYTHON310)" ]; then \
		echo "infbench: no Python 3.10 found, so the TensorRT environment was not built: install python3.10 or run make env-tensorrt PYTHON310=/path/to/python3.10"; \
		exit 1; \
	fi
	@$(MAKE) --no-print-directory $(TRTVENV)/.installed

$(TRTVENV)/.installed: envs/requirements-tensorrt.txt
	$(PYTHON310) -m venv $(TRTVENV)
	$(TRTVENV)/bin/pip install --quiet -r envs/requirements-tensorrt.txt
	touch $@

# TensorRT 10/11 from NVIDIA's package index, for machines that reach it (any Python >= 3.9),
# for CUDA 12 or (TRT_CUDA=13) CUDA 13, with the cuda-python of the same CUDA major
TRT_CUDA ?= 12
env-tensorrt-nvidia:
	$(PYTHON) -m venv $(TRTVENV)
	$(TRTVENV)/bin/pip install --quiet -r envs/requirements-tensorrt-nvidia-cu$(TRT_CUDA).txt
	touch $(TRTVENV)/.installed

# ONNX Runtime's CUDA provider in the main environment, in place of the CPU package
env-gpu: env-main
	$(VENV)/bin/pip uninstall --quiet --yes onnxruntime
	$(VENV)/bin/pip install --quiet -r envs/requirements-gpu.txt

# An air-gapped GPU node: on a connected machine, wheels for the node's Python into
# wheelhouse/ (WHEELHOUSE_STACK: full, workflow = without PyTorch, snakemake = Snakemake
# only; envs/wheelhouse.sh); on the node, `bash envs/offline-gpu.sh` installs them and runs
# config/gpu.yaml.
WHEEL_PYTHON ?= $(PYTHON)
WHEELHOUSE_STACK ?= full
wheelhouse:
	bash envs/wheelhouse.sh "$(WHEEL_PYTHON)" "$(WHEELHOUSE_STACK)" wheelhouse

demo: env
	$(VENV)/bin/snakemake --cores 1 --resources gpu=1

# the HTML report of the last run (tables, figures, every cell's result file with captions);
# REPORT_ARGS for another config, e.g. REPORT_ARGS="--configfile config/gpu.yaml"
report: env-main
	$(VENV)/bin/snakemake --cores 1 --report results/report.html $(REPORT_ARGS)

test: env env-cluster
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder tests

# mutation score of metrics, timing, scoring and the data path (cosmic-ray; not part of make test)
mutation: env
	bash benchmarks/mutation/run.sh

lint: env-main
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(VENV)/bin/ruff check workflow benchmarks tests
	$(VENV)/bin/ruff format --check workflow benchmarks tests

clean:
	rm -rf results resources logs .snakemake
