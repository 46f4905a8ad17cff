"""`claude-proxy`: one entry point for everything the image does (serve, and the credential commands)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from claude_proxy import __version__
from claude_proxy.config import ConfigError, Settings, default_credentials_path

log = logging.getLogger("claude_proxy.cli")

if TYPE_CHECKING:  # the lifecycle modules are imported by the commands that need them
    from starlette.applications import Starlette

    from claude_proxy.credentials.lifecycle import Outcome
    from claude_proxy.credentials.resolver import CredentialResolver


def _serve(args: argparse.Namespace) -> int:
    try:  # before anything else is imported: a bad setting ends `serve` at once, with one line
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return 2

    from claude_proxy.server.serving import build_server, listening_socket, run_workers

    if args.graceful_timeout is not None:
        settings = settings.model_copy(update={"shutdown_grace": args.graceful_timeout})
    if args.log_level is not None:
        settings = settings.model_copy(update={"log_level": args.log_level})
    host = args.host or settings.host
    port = args.port or settings.port
    settings = settings.model_copy(update={"host": host, "port": port})  # what the start-up log says it listens on
    workers = 1 if args.workers is None else args.workers
    if workers < 1:
        print("claude-proxy: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1:
        # N complete servers, each with its own app, upstream pool and drain, on one port (SO_REUSEPORT).
        extra = [] if args.graceful_timeout is None else ["--graceful-timeout", str(args.graceful_timeout)]
        if args.log_level is not None:
            extra += ["--log-level", args.log_level]
        return run_workers(workers, host, port, extra)
    sockets = [listening_socket(host, port)] if args.reuse_port else None
    try:
        build_server(serving_app(settings), settings, host, port).run(sockets=sockets)
    except KeyboardInterrupt:  # Ctrl-C: the server has stopped and said so; no traceback for asking it to
        return 130
    return 0


def serving_app(settings: Settings | None = None) -> Starlette:
    """The app as `serve` runs it. Everything alive once it is built (modules, the app, its routes and models) lives
    as long as the process, so it is frozen out of the garbage collector's reach: a full collection then has a few
    thousand objects to walk instead of tens of thousands, and no longer stalls requests for tens of milliseconds.
    A request allocates hundreds of short-lived containers that reference counting frees on its own, so the youngest
    generation is collected every 10,000 allocations rather than every 700 (about 4% more requests per second)."""
    import gc

    from claude_proxy.server.app import create_app

    app = create_app(settings)
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(10_000, middle, old)
    return app


def _default(name: str) -> Any:
    """A setting's default as `Settings` holds it, for the help texts (which repeat no default of their own)."""
    return Settings.model_fields[name].default


# The levels uvicorn knows (and `serve` takes), as the logging module numbers them; trace is uvicorn's own, below debug.
LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}


def _level(text: str) -> str:
    name = text.strip().lower()
    if name not in LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level: use one of {', '.join(LEVELS)}")
    return name


def _setup_logging(level: str | None) -> None:
    """Logging on stderr at `level` (the flag), else LOG_LEVEL, else the default; a LOG_LEVEL that is not a level
    ends the command with one line, as it ends `serve`."""
    name = level
    if name is None:
        variable = os.environ.get("LOG_LEVEL", "").strip()
        try:
            name = _level(variable) if variable else _default("log_level")
        except argparse.ArgumentTypeError:
            print(f"claude-proxy: LOG_LEVEL must be one of {', '.join(LEVELS)} (got {variable!r})", file=sys.stderr)
            raise SystemExit(2) from None
    logging.addLevelName(LEVELS["trace"], "TRACE")
    logging.basicConfig(level=LEVELS[name], stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # Transport chatter adds nothing to the outcome line and must never get a chance to print a request body.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _emit(outcome: Outcome) -> int:
    from claude_proxy.credentials.lifecycle import TERMINATION_LOG, emit

    emit(outcome, sys.stdout.write, os.environ.get("CLAUDE_PROXY_TERMINATION_LOG", TERMINATION_LOG))
    sys.stdout.flush()
    return outcome.exit_code


def _internal_failure(command: str, exc: BaseException) -> Outcome:
    from claude_proxy.credentials.lifecycle import Outcome, Result

    # The type name only: a foreign exception's text is not ours to vouch for.
    return Outcome(command, Result.FAILED, "internal", f"unexpected error ({type(exc).__name__}); nothing changed")


def _credentials_path(args: argparse.Namespace) -> Path:
    return Path(args.credentials).expanduser() if args.credentials else default_credentials_path(os.environ)


def _refresh(args: argparse.Namespace) -> int:
    import dataclasses

    from claude_proxy.credentials.lifecycle import RefreshOptions, refresh
    from claude_proxy.credentials.oauth import REFRESH_RETRY

    _setup_logging(args.log_level)
    options = RefreshOptions(
        before_seconds=args.before * 60,
        force=args.force,
        token_url=args.token_url,
        client_id=args.client_id,
        timeout=args.timeout,
        retry=dataclasses.replace(REFRESH_RETRY, max_retries=max(1, args.attempts) - 1, max_wait=args.max_wait),
        lock_timeout=args.lock_timeout,
    )
    if args.every is not None:
        return _refresh_every(args, options)
    try:
        outcome = refresh(_credentials_path(args), options)
    except Exception as exc:
        outcome = _internal_failure("refresh", exc)
    return _emit(outcome)


def _refresh_every(args: argparse.Namespace, options: Any) -> int:
    """`refresh --every`: the refresh on a loop, one outcome line per run, until SIGTERM or Ctrl-C (exit 0) or a
    login that can no longer be refreshed (exit 1, with a line saying what to do)."""
    import signal
    import threading

    from claude_proxy.credentials.lifecycle import keep_alive

    path = _credentials_path(args)
    stop = threading.Event()

    def asked_to_stop(sig: int, frame: object) -> None:
        if not stop.is_set():
            log.info("signal %d: stopping after the run in progress, if any", sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, asked_to_stop)
    log.info(
        "keeping %s fresh: a look every %s, a refresh when it expires within %s",
        path,
        _span(args.every),
        _span(options.before_seconds),
    )
    try:
        ended = keep_alive(path, options, args.every, stop, _emit)
    except Exception as exc:
        return _emit(_internal_failure("refresh", exc))
    if ended is None:
        log.info("stopped")
        return 0
    print(f"claude-proxy: {path} can no longer be refreshed ({ended.reason}): {ended.message}", file=sys.stderr)
    return 1


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _duration(text: str) -> float:
    """`30m`, `1h`, `90s` or plain seconds; at least one second."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 1h, 90s)")
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1s: {text!r}")
    return seconds


def _seed(args: argparse.Namespace) -> int:
    from claude_proxy.credentials.lifecycle import seed

    _setup_logging(args.log_level)
    try:
        outcome = seed(Path(args.source).expanduser(), Path(args.target).expanduser(), force=args.force)
    except Exception as exc:
        outcome = _internal_failure("seed", exc)
    return _emit(outcome)


def _check(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from claude_proxy.credentials.lifecycle import check

    _setup_logging(args.log_level)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return 2
    path = Path(args.credentials).expanduser() if args.credentials else settings.credentials_path
    resolver = settings.credential_resolver(path)
    report = check(resolver)
    if not args.usage:
        print(json.dumps(report.to_dict()) if args.json else report.to_text())
        return report.exit_code
    usage, problem = (
        (None, "no valid credential to ask with") if report.exit_code else _usage(settings, resolver, args.json)
    )
    if problem and problem.startswith("refused"):  # valid as far as the file says, refused by Anthropic
        report = dataclasses.replace(report, status="refused", exit_code=1, message=f"{report.message}; but {problem}")
    if args.json:
        print(json.dumps({**report.to_dict(), "usage": usage, "usageError": problem}))
    else:
        print(report.to_text())
        if problem:
            print(f"usage:        unavailable ({problem})")
        if usage is not None:
            print("\n".join(usage) if usage else "usage:        Anthropic sent no rate-limit headers")
    return report.exit_code or (1 if problem else 0)


def _usage(settings: Settings, resolver: CredentialResolver, as_json: bool) -> tuple[Any, str | None]:
    """One count_tokens call (it costs no tokens) with the proxy's credential, for the rate-limit headers Anthropic
    answers with: the windows as text lines, or as a dict with --json (see `_check`)."""
    import time

    import httpx

    from claude_proxy.upstream import ratelimits
    from claude_proxy.upstream.api import build_headers

    body = {"model": settings.default_model or settings.models[0], "messages": [{"role": "user", "content": "."}]}
    try:
        response = httpx.post(
            f"{settings.base_url}/v1/messages/count_tokens",
            json=body,
            headers=build_headers(resolver.resolve()),
            timeout=settings.connect_timeout + 20,
        )
    except httpx.HTTPError as exc:
        return None, f"Anthropic API is unreachable ({type(exc).__name__})"
    state = ratelimits.parse(response.headers)
    now = time.time()
    usage = state.to_dict(now) if as_json else ratelimits.to_text(state, now)
    if 400 <= response.status_code < 500:  # the credential (or the request made with it) was refused
        refused = f"refused: Anthropic answered HTTP {response.status_code}{_error_detail(response)}"
        return (None if state.empty() else usage), refused
    if response.status_code >= 400 and state.empty():
        return None, f"Anthropic API answered HTTP {response.status_code}"
    return usage, None


def _error_detail(response: Any) -> str:
    """` (type: message)` of an Anthropic error body, masked and bounded; empty when there is none."""
    from claude_proxy.redact import mask_secrets

    try:
        error = response.json().get("error") or {}
        kind, message = error.get("type"), error.get("message")
    except (ValueError, AttributeError):
        return ""
    text = ": ".join(str(part) for part in (kind, message) if isinstance(part, str) and part)
    return f" ({mask_secrets(text)[:200]})" if text else ""


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
        return value

    return parse


SERVE_EPILOG = f"""\
endpoints:
  POST /v1/chat/completions  OpenAI Chat Completions (streamed or not)
  POST /v1/responses         OpenAI Responses
  POST /v1/messages          Anthropic Messages, passed through
  POST /v1/messages/count_tokens
                             Anthropic token counting, passed through
  GET  /v1/models, /v1/models/{{model}}
                             the models (Anthropic's list, else PROXY_MODELS)
  GET  /health, /readyz      liveness; readiness (503 with the reason when not ready)
  GET  /metrics              Prometheus metrics
  /v1/chat/completions, /v1/responses and /v1/models also answer without the /v1.

main environment variables:
  ANTHROPIC_API_KEY          Console API key (the first credential tried)
  CLAUDE_ACCESS_TOKEN, CLAUDE_CODE_OAUTH_TOKEN
                             an OAuth access token (e.g. from `claude setup-token`)
  CLAUDE_CREDENTIALS_PATH    Claude Code credentials file (default $CLAUDE_CONFIG_DIR/.credentials.json,
                             else ~/.claude/.credentials.json, written by `claude auth login`)
  ANTHROPIC_BASE_URL         upstream (default {_default("base_url")}; without /v1)
  HOST, PORT                 listen address (default {_default("host")}, {_default("port")})
  PROXY_API_KEYS             comma-separated keys clients must send (unset: no key asked)
  PROXY_DEFAULT_MODEL, PROXY_MODEL_ALIASES
                             model for requests naming none; alias=model,... pairs
  LOG_LEVEL, LOG_FORMAT      critical|error|warning|info|debug|trace ({_default("log_level")});
                             json|plain ({_default("log_format")})

Every variable, its default and its range: docs/configuration.md (in the project's
source). `claude-proxy check` shows which credential serve would use."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the OpenAI-compatible proxy server",
        description="Serve OpenAI's Chat Completions and Responses APIs (and Anthropic's own Messages API, passed "
        "through) in front of Anthropic's Messages API. Settings come from the environment and are checked at "
        "start: a bad one ends serve with one line naming it, and exit code 2.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default=None, help=f"listen address (env HOST, default {_default('host')})")
    serve.add_argument("--port", type=_port, default=None, help=f"listen port (env PORT, default {_default('port')})")
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=None,
        help="seconds in-flight requests get on SIGTERM "
        f"(env PROXY_SHUTDOWN_GRACE, default {_default('shutdown_grace'):g})",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing the port (default 1); up to one per CPU core",
    )
    serve.add_argument(
        "--log-level",
        type=_level,
        default=None,
        metavar="LEVEL",
        help=f"{'|'.join(LEVELS)} (env LOG_LEVEL, default {_default('log_level')})",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for each worker
    serve.set_defaults(func=_serve)

    from claude_proxy.credentials.oauth import DEFAULT_CLIENT_ID, DEFAULT_TOKEN_URL

    log_level = argparse.ArgumentParser(add_help=False)
    level_help = f"{'|'.join(LEVELS)} (env LOG_LEVEL, default {_default('log_level')})"
    log_level.add_argument("--log-level", type=_level, default=None, metavar="LEVEL", help=level_help)

    refresh = sub.add_parser(
        "refresh",
        parents=[log_level],
        help="renew the OAuth access token in the credentials file (refresh_token grant, under a lock)",
        description="Renew the OAuth access token in a Claude Code credentials file when it is due. Prints one "
        "JSON outcome line; exit 0 when refreshed or not due, 1 on failure (file left untouched).",
    )
    refresh.add_argument("--credentials", default=None, help="credentials file (default: as the proxy resolves it)")
    refresh.add_argument(
        "--before", type=_positive(float), default=60.0, help="refresh when the token expires within MINUTES (60)"
    )
    refresh.add_argument("--force", action="store_true", help="refresh even when the token is not due")
    refresh.add_argument(
        "--every",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="keep going: look again every DURATION (e.g. 30m; jittered, sooner when the token falls due), one "
        "outcome line per look, until SIGTERM or Ctrl-C (exit 0) or a login that cannot be refreshed (exit 1)",
    )
    refresh.add_argument(
        "--token-url",
        default=os.environ.get("CLAUDE_OAUTH_TOKEN_URL") or DEFAULT_TOKEN_URL,
        help=f"OAuth token endpoint (env CLAUDE_OAUTH_TOKEN_URL, default {DEFAULT_TOKEN_URL})",
    )
    refresh.add_argument(
        "--client-id",
        default=os.environ.get("CLAUDE_OAUTH_CLIENT_ID") or DEFAULT_CLIENT_ID,
        help="OAuth client id (env CLAUDE_OAUTH_CLIENT_ID, default Claude Code's public client id)",
    )
    refresh.add_argument("--timeout", type=_positive(float), default=30.0, help="seconds per HTTP attempt (30)")
    refresh.add_argument("--attempts", type=_positive(int), default=4, help="tries of the grant, first included (4)")
    refresh.add_argument(
        "--max-wait", type=_positive(float), default=120.0, help="seconds of back-off/retry-after in total (120)"
    )
    refresh.add_argument(
        "--lock-timeout", type=_positive(float), default=300.0, help="seconds to wait for another refresher (300)"
    )
    refresh.set_defaults(func=_refresh)

    seed = sub.add_parser(
        "seed",
        parents=[log_level],
        help="install a credentials file (e.g. from a Secret) unless the target is newer",
        description="Copy a validated credentials file to a writable location, atomically and with mode 0600, "
        "unless the target holds credentials at least as new (by claudeAiOauth.expiresAt). Prints one JSON "
        "outcome line; exit 0 when copied or skipped, 1 on failure.",
    )
    seed.add_argument("--from", dest="source", required=True, help="source credentials file (read only)")
    seed.add_argument("--to", dest="target", required=True, help="target credentials file")
    seed.add_argument("--force", action="store_true", help="copy even when the target is newer")
    seed.set_defaults(func=_seed)

    check = sub.add_parser(
        "check",
        parents=[log_level],
        help="report which credential the proxy would use and how long it stays valid",
        description="Resolve credentials as the proxy does and report source, kind, expiry and subscription "
        "type (never the secret). Exit 0 valid, 1 expired or missing, 2 malformed.",
    )
    check.add_argument("--credentials", default=None, help="credentials file (default: as the proxy resolves it)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.add_argument(
        "--usage",
        action="store_true",
        help="also ask Anthropic (one count_tokens call, no tokens spent) how close the login is to its rate "
        "limits: the subscription windows (5h, 7d) or the Console limits",
    )
    check.set_defaults(func=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
