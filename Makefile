# One-command entry points. `make book` builds the whole book from a clean clone;
# `make test` runs the test suite. Both set up the virtual environment first if needed.
PYTHON ?= python3
VENV := .venv
PROFILE ?= quick
STAMP := $(VENV)/.imuse-setup-stamp
# The pinned packages go in with uv (from PyPI, like pip): the same versions, but the 6 GB of
# wheels (torch brings CUDA libraries) are unpacked in parallel and linked from uv's cache on a
# second set-up: measured 0:49 from an empty cache and 2 s from a warm one, where pip took 3-4
# minutes. `make setup INSTALLER=pip` uses pip instead.
INSTALLER ?= uv
UV_VERSION := 0.13.9
ifeq ($(INSTALLER),uv)
PIP_INSTALL = $(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python
else
PIP_INSTALL = $(VENV)/bin/python -m pip install --quiet
endif

.PHONY: setup book book-check lab test test-fast bench clean-results

setup: $(STAMP)

# Re-run set-up whenever the pins, the package metadata or the list of system packages change.
# First the system packages (scripts/setup_system.py: Debian's chromium, npm, nodejs; installed with apt
# when missing, or skipped with one line saying why), recorded in the stamp with the Python ones.
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml scripts/setup_system.py Makefile
	$(PYTHON) scripts/setup_system.py --record $(STAMP).system
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(if $(filter uv,$(INSTALLER)),$(VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION))
	$(PIP_INSTALL) -r requirements.txt
	$(PIP_INSTALL) --no-deps -r requirements-nodeps.txt
	$(PIP_INSTALL) --no-deps -e .
	$(PYTHON) scripts/setup_system.py --finish $@

# Verify the data, compute features, execute every notebook with papermill, build the HTML.
book: setup
	$(VENV)/bin/python scripts/build_book.py --profile $(PROFILE)

# The same, then headless Chromium opens every page and logs any request leaving the machine
# (this one needs the browser: without it, it stops with one line saying so).
book-check: setup
	$(VENV)/bin/python scripts/build_book.py --profile $(PROFILE) --browser-check

# The notebooks in JupyterLab, on this environment's Python (its "Python 3 (ipykernel)" kernel).
lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Everything, including the slow end-to-end checks (book build in the quick profile), on
# PYTEST_WORKERS pytest-xdist workers, a test file to a worker: the book build starts first, the
# other files run beside it (tests/conftest.py). PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# Throughput and latency benchmarks (printed, and saved under results/benchmarks/).
bench: setup
	$(VENV)/bin/python benchmarks/bench_features.py
	$(VENV)/bin/python benchmarks/bench_recommend.py

clean-results:
	rm -rf results book/_executed _build
