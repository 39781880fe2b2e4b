# The two commands: `make demo` and `make test` (each does all set-up first; set-up is idempotent).
PY := .venv/bin/python
.PHONY: setup demo test bench clean-venv

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	@$(PY) -m pytest -q tests

bench: setup
	@.venv/bin/dcvae bench --json bench.json --overwrite

clean-venv:
	rm -rf .venv
