# `make demo`: the workflow on the embedded default config; `make test`: the test suite.
# Both create the environments first when they are missing.

PYTHON ?= python3
# OneFlow 0.9.0 needs Python <= 3.10: the first python3.10 that runs (a pyenv shim may not),
# or name one with PYTHON310=/path/to/python3.10
PYTHON310 ?= $(shell for p in python3.10 $(HOME)/.pyenv/versions/3.10*/bin/python3.10 /root/.pyenv/versions/3.10*/bin/python3.10; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)

VENV := .venv
OFVENV := .venv-oneflow

.PHONY: env env-main env-oneflow demo test lint clean

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

demo: env
	$(VENV)/bin/snakemake --cores 1 --resources gpu=1

test: env
	$(VENV)/bin/python -m pytest tests

lint: env-main
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules

clean:
	rm -rf results resources logs .snakemake
