# Two commands for a new user: `make demo` and `make test`. Both set up .venv (Python 3.10) once;
# where no Python 3.10 is installed, setup fetches one with uv into .tools/ (scripts/setup_venv.sh).
PY := .venv/bin/python
STAMP := .venv/.i2e-neuro-installed

.PHONY: demo test test-fast lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh
	@PYTHON310="$(PYTHON310)" bash scripts/setup_venv.sh
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m i2e_neuro.cli demo

lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

# The edit loop: everything but the Lava-graph and training tests (marker `slow`).
test-fast: lint
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs .pytest_cache
