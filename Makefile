# The two commands a fresh machine needs (see README.md):
#   make demo   install everything, start the stack and all stages, run the sample catalog
#   make test   install everything, start the stack, run the import rules and the whole test suite
#   make lint   ruff and the import rules (scripts/check_imports.py)
.PHONY: install demo test lint imports bench stack-down

install:
	./scripts/bootstrap.sh

demo: install
	.venv/bin/lightbox demo

test: install
	.venv/bin/lightbox stack up
	.venv/bin/lightbox schemas check
	./scripts/run_tests.sh

lint: install imports
	.venv/bin/ruff check .

imports:
	.venv/bin/python scripts/check_imports.py

bench: install
	.venv/bin/lightbox stack up
	.venv/bin/lightbox bench pipeline

stack-down:
	.venv/bin/lightbox stack down
