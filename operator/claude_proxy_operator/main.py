"""`claude-proxy-operator`: `kopf run` for this operator, with its registry, settings and a liveness endpoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import kopf

from claude_proxy_operator.config import Config
from claude_proxy_operator.handlers import build_registry, configure
from claude_proxy_operator.metrics import OperatorMetrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-proxy-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="liveness endpoint to serve (empty to disable); default %(default)s",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging (never logs Secret content)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_env()
    except ValueError as exc:
        print(f"claude-proxy-operator: {exc}", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose)
    settings = kopf.OperatorSettings()
    configure(settings)
    metrics = OperatorMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    kopf.run(
        registry=build_registry(config, metrics=metrics),
        settings=settings,
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
