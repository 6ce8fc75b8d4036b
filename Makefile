# The two commands of the README: `make demo` (set up, then grid's main job on this machine)
# and `make test` (set up, then the whole suite). Everything else here serves those two.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := plugins/ssh-paramiko plugins/ray-backend plugins/threshold-offload plugins/memory-pool
PREFIX ?= $(HOME)/.local

.PHONY: demo test lint install-system uninstall-system clean

$(VENV)/.installed: pyproject.toml $(PLUGINS:%=%/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e . $(addprefix -e ,$(PLUGINS))
	@# Editable sources get no bytecode where PYTHONDONTWRITEBYTECODE is set: compile once here.
	$(BIN)/python -m compileall -q grid_core $(PLUGINS) >/dev/null
	touch $@

# The test extras, and a metrics source whose readings the tests write (tests/plugins/).
$(VENV)/.test-installed: $(VENV)/.installed tests/plugins/scripted-metrics/pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]' -e tests/plugins/scripted-metrics
	touch $@

# grid's main job on the embedded default: a one-node Ray cluster of this machine, a job on it.
demo: $(VENV)/.installed
	$(BIN)/grid cluster start
	$(BIN)/grid run -- python -c 'import platform, ray; print("job ran on", platform.node(), "with ray", ray.__version__)'
	$(BIN)/grid cluster status
	@echo "The cluster keeps running: $(BIN)/grid cluster stop ends it."

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# `grid` on your PATH outside the dev environment, with every plugin: its own venv under
# $(PREFIX)/share/grid and a link in $(PREFIX)/bin (put that on PATH).
install-system:
	$(PYTHON) -m venv $(PREFIX)/share/grid/venv
	$(PREFIX)/share/grid/venv/bin/python -m pip install -q . $(PLUGINS)
	mkdir -p $(PREFIX)/bin
	ln -sf $(PREFIX)/share/grid/venv/bin/grid $(PREFIX)/bin/grid
	@echo "installed $(PREFIX)/bin/grid"

uninstall-system:
	rm -rf $(PREFIX)/share/grid/venv $(PREFIX)/bin/grid

clean:
	rm -rf $(VENV) build *.egg-info plugins/*/*.egg-info .pytest_cache .mypy_cache .ruff_cache
