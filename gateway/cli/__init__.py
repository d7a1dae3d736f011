"""The `lightbox` command line: main.py builds the parser; each command group has its module
(stack, pipeline, topology, jobs, eventlog, dlq, harness) with one function per command."""
