"""`lightbox serve`, `demo` and `bench`: the HTTP gateway, and whole-pipeline runs that print figures."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, int_at_least, positive_seconds, settings_of
from gateway.cli.pipeline import copies_arg


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.web.app import serve

    settings = settings_of(args)
    overrides: dict[str, object] = {}
    if args.behind_proxy:
        overrides["behind_proxy"] = True
    if args.tls_cert or args.tls_key:
        overrides.update(tls_cert=args.tls_cert or "", tls_key=args.tls_key or "")
    if args.allow_host:
        overrides["allowed_hosts"] = [*settings.gateway.allowed_hosts, *args.allow_host]
    if overrides:
        settings = settings.model_copy(update={"gateway": settings.gateway.model_copy(update=overrides)})
    serve(settings, host=args.host, port=args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.harness.demo import run_demo

    return run_demo(
        settings_of(args), products=args.products, timeout_s=args.timeout, keep_running=args.keep_running
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from gateway.cli.pipeline import merged_copies
    from gateway.harness.bench import run_pipeline_bench

    settings = settings_of(args)
    return run_pipeline_bench(
        settings,
        jobs=args.jobs,
        timeout_s=args.timeout,
        mode=args.mode,
        copies=merged_copies(settings.supervisor.copies, args.copies),
        baseline=args.baseline,
        keep_topics=args.keep_topics,
        poll_s=args.poll,
        warmup=args.warmup,
    )


def register_serve(commands: Commands) -> None:
    p = commands.add_parser(
        "serve",
        help="the HTTP gateway: the JSON API (/docs), the review and dashboard pages",
        description="The HTTP API for systems that cannot speak Kafka, and the pages for reviewers "
        "and analysts. Every route but /healthz, /readyz, /docs and /openapi.json needs an API token "
        "(`lightbox tokens create`). It answers only Host names it knows (loopback, the bind "
        "address, gateway.allowed_hosts). Off loopback it refuses to start without TLS "
        "(--tls-cert/--tls-key) or --behind-proxy, and without an allowed host name.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS (gateway.tls_cert)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert (gateway.tls_key)")
    p.add_argument(
        "--behind-proxy",
        action="store_true",
        help="a proxy in front terminates TLS (gateway.behind_proxy): serve plain HTTP off loopback, "
        "session cookies marked Secure",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to answer besides loopback and the bind address (repeatable; "
        "'.example.com' for a domain and its subdomains; gateway.allowed_hosts)",
    )
    p.set_defaults(func=cmd_serve)


def register_runs(commands: Commands) -> None:
    p = commands.add_parser(
        "demo",
        help="start everything, run a sample catalog end to end, print a summary",
        description="Start the stack and every stage under a fresh topic prefix, serve sample product "
        "images on loopback, submit their catalog events, wait for the jobs, then print jobs by "
        "state, latency and the artifact rate, and copy the published images under "
        "LIGHTBOX_HOME/demo/<run>/published/.",
    )
    p.add_argument("--products", type=int, default=6, help="sample products to submit (default 6)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the jobs (default 300)")
    p.add_argument("--keep-running", action="store_true", help="leave the stages running after the summary")
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser(
        "bench",
        help="benchmarks that print figures",
        description="pipeline: N jobs through every stage (CPU compositor) under a fresh topic "
        "prefix, between two runs of a baseline: the same kind of jobs through the stages' "
        "handlers in one process, one at a time, no Kafka. Prints throughput and its ratio to the "
        "two baseline runs pooled, "
        "p50/p95 end-to-end latency, the share of it spent outside the stages' handlers, and per "
        "stage the CPU-seconds per job (each process's own), how busy its processes were, handler "
        "time, and the bottleneck; the CPU per job of the stack's own services (Kafka, MinIO, the "
        "registry, when `stack up` started them here), which share the cores; with the machine's "
        "load averages. docs/benchmarks.md has the figures and how they were made.",
    )
    p.add_argument("what", choices=["pipeline"], help="pipeline: N jobs through every stage (compositor)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="jobs to run (default 144: a burst long enough that filling and draining the pipeline, "
        "about 2 s, is not most of it)",
    )
    p.add_argument(
        "--mode",
        choices=["burst", "sequential"],
        default="burst",
        help="burst: all at once (throughput); sequential: one at a time (pipeline overhead)",
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the jobs (default 600)")
    p.add_argument(
        "--copies",
        type=copies_arg,
        default=None,
        metavar="N|STAGE=N,...",
        help="processes per stage, as `run all --copies` (default: supervisor.copies, else one each)",
    )
    p.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the single-process baseline (no ratio is printed)",
    )
    p.add_argument(
        "--keep-topics",
        action="store_true",
        help="leave the run's topics (prefix bench-RUN.) on the broker; by default they are deleted",
    )
    p.add_argument(
        "--warmup",
        type=int_at_least(0),
        default=16,
        metavar="N",
        help="jobs run first through the pipeline and through each baseline run, not timed or "
        "counted (default 16, rounded up to whole products; 0: none): the stage processes are "
        "fresh each run, a deployment's are long-running",
    )
    p.add_argument(
        "--poll",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="how often to ask the event log for the jobs' states (default 2 in burst, 0.5 in "
        "sequential): each ask takes CPU from the pipeline; burst's jobs/s ends at the last "
        "publish event, whenever a poll notices it",
    )
    p.set_defaults(func=cmd_bench)
