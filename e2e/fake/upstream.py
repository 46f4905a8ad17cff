"""The e2e test's upstream, run inside the cluster: the repository's fake Anthropic API and fake OAuth token endpoint
in one process, linked the way the real ones are: the Messages API accepts exactly the access token the token
endpoint issued last, so once a refresh rotates it, only a proxy that reads the rotated token still gets answers.

Ports: 8080 Messages API, 8081 OAuth token endpoint (/v1/oauth/token), 8082 GET /state (what the test inspects:
grants made, and which issued token the last Messages request carried, as its serial number, never the token).
The first login (serial 1) is issued at start; the test builds the seed credentials from its well-known fake values.
Run: python -m e2e.fake.upstream (stdlib only, with tests/fakes beside it).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.oauth import FakeOAuthServer, Login

ACCESS_PREFIX = "sk-ant-oat01-test-"
ANTHROPIC_PORT, OAUTH_PORT, STATE_PORT = 8080, 8081, 8082
SEED_ACCESS_TOKEN, SEED_REFRESH_TOKEN = f"{ACCESS_PREFIX}0001", "sk-ant-ort01-test-0001"  # the first login's


def seed_credentials(expires_at_ms: int) -> str:
    """A `.credentials.json` holding the first login, as `claude auth login` would leave it."""
    oauth = {
        "accessToken": SEED_ACCESS_TOKEN,
        "refreshToken": SEED_REFRESH_TOKEN,
        "expiresAt": expires_at_ms,
        "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "pro",
    }
    return json.dumps({"claudeAiOauth": oauth})


class LinkedOAuth(FakeOAuthServer):
    """Each issued login replaces the access token the Messages API accepts."""

    def __init__(self, anthropic: FakeAnthropic, **kwargs: Any) -> None:
        self.anthropic = anthropic
        super().__init__(**kwargs)

    def _issue(self) -> Login:
        login = super()._issue()
        self.anthropic.oauth_tokens = {login.access_token}
        return login


def state(anthropic: FakeAnthropic, oauth: LinkedOAuth) -> dict[str, Any]:
    last = anthropic.messages_requests[-1] if anthropic.messages_requests else None
    auth = (last.headers.get("authorization") or "") if last else ""
    serial = auth.removeprefix("Bearer ").removeprefix(ACCESS_PREFIX) if auth.startswith("Bearer ") else None
    return {
        "grants": oauth.grants,
        "messages": len(anthropic.messages_requests),
        "lastTokenSerial": int(serial) if serial and serial.isdigit() else None,
    }


def state_server(anthropic: FakeAnthropic, oauth: LinkedOAuth, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/state":
                self.send_error(404)
                return
            body = json.dumps(state(anthropic, oauth)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return ThreadingHTTPServer((host, port), Handler)


class Upstream:
    """The three servers, started and stopped together; ports 0 pick free ones (tests)."""

    def __init__(self, host: str = "0.0.0.0", ports: tuple[int, int, int] = (ANTHROPIC_PORT, OAUTH_PORT, STATE_PORT)):
        self.anthropic = FakeAnthropic(api_keys=(), oauth_tokens=(), host=host, port=ports[0])
        self.oauth = LinkedOAuth(self.anthropic, host=host, port=ports[1])
        first = self.oauth.login()
        assert (first.access_token, first.refresh_token) == (SEED_ACCESS_TOKEN, SEED_REFRESH_TOKEN)
        self.states = state_server(self.anthropic, self.oauth, host, ports[2])
        self._thread = threading.Thread(target=self.states.serve_forever, daemon=True)

    @property
    def state_url(self) -> str:
        host, port = self.states.server_address[:2]
        return f"http://{host!s}:{port}/state"

    def __enter__(self) -> Upstream:
        self.anthropic.__enter__()
        self.oauth.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.states.shutdown()
        self.states.server_close()
        self.oauth.stop()
        self.anthropic.__exit__()


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Upstream():
        print(f"fake upstream: messages :{ANTHROPIC_PORT}, oauth :{OAUTH_PORT}, state :{STATE_PORT}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
