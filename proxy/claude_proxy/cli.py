"""`claude-proxy`: one entry point for everything the image does (serve, and the credential commands)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from claude_proxy.config import ConfigError, Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or 1
    if workers < 1:
        print("claude-proxy: --workers must be at least 1", file=sys.stderr)
        return 2
    # Each worker process builds its own app (and upstream pool) from the same environment.
    app: object = "claude_proxy.cli:serving_app" if workers > 1 else serving_app(settings)
    uvicorn.run(
        app,  # type: ignore[arg-type]
        factory=workers > 1,
        workers=workers,
        host=host,
        port=port,
        loop=_installed("uvloop", "asyncio"),
        http=_installed("httptools", "h11"),
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    return 0


def serving_app(settings: Settings | None = None) -> object:
    """The app as `serve` runs it. Everything alive once it is built (modules, the app, its routes and models) lives
    as long as the process, so it is frozen out of the garbage collector's reach: a full collection then has a few
    thousand objects to walk instead of tens of thousands, and no longer stalls requests for tens of milliseconds."""
    import gc

    from claude_proxy.app import create_app

    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


def _installed(module: str, fallback: str) -> str:
    """uvicorn's C-accelerated event loop and HTTP parser when installed (uvicorn[standard]), else the pure ones."""
    import importlib.util

    return module if importlib.util.find_spec(module) is not None else fallback


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-proxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible proxy server")
    serve.add_argument("--host", default=None, help="listen address (env HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="listen port (env PORT, default 8080)")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing the port (default 1); up to one per CPU core",
    )
    serve.add_argument("--graceful-timeout", type=float, default=25.0, help="seconds in-flight requests get on SIGTERM")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
