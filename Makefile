# Two commands do all set-up: `make demo` and `make test`.
# Both create or update .venv; the install is skipped when pyproject.toml and constraints.txt are unchanged.
PYTHON ?= python3
VENV := .venv
HASH := $(shell cat pyproject.toml constraints.txt plugins/*/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.stamp-$(HASH)
# Tests and demo run on CPU threads; 2 cores in CI.
export OMP_NUM_THREADS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e ".[test]"
	@for p in plugins/*/; do [ -f $$p/pyproject.toml ] && $(VENV)/bin/python -m pip install -q -c constraints.txt --no-deps -e $$p || true; done
	@rm -f $(VENV)/.stamp-*
	@touch $@

demo: venv
	$(VENV)/bin/cgkd run systems/reline.yaml --preset quick --dir runs/reline-quick

test: venv
	$(VENV)/bin/python -m pytest -q -ra tests

clean:
	rm -rf runs .pytest_cache
