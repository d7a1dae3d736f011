# The two commands a fresh machine needs (see README.md):
#   make demo   install everything, start the stack and all stages, run the sample catalog
#   make test   install everything, start the stack, run the whole test suite
.PHONY: install demo test lint bench stack-down

install:
	./scripts/bootstrap.sh

demo: install
	.venv/bin/lightbox demo

test: install
	.venv/bin/lightbox stack up
	./scripts/run_tests.sh

lint: install
	.venv/bin/ruff check .

bench: install
	.venv/bin/lightbox stack up
	.venv/bin/lightbox bench pipeline

stack-down:
	.venv/bin/lightbox stack down
