# Two commands for a new user: `make demo` and `make test`. Both set up .venv (Python 3.10) once.
PY := .venv/bin/python
STAMP := .venv/.i2e-neuro-installed

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh
	@PYTHON310="$(PYTHON310)" bash scripts/setup_venv.sh
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m i2e_neuro.cli demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
