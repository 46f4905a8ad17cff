"""`claude-proxy`: one entry point for everything the image does (serve, and the credential commands)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from claude_proxy.config import ConfigError, Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from claude_proxy.app import create_app

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-proxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible proxy server")
    serve.add_argument("--host", default=None, help="listen address (env HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="listen port (env PORT, default 8080)")
    serve.add_argument("--graceful-timeout", type=float, default=25.0, help="seconds in-flight requests get on SIGTERM")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
