"""A fake OAuth token endpoint: real HTTP on 127.0.0.1, rotating refresh tokens like Anthropic's.

Every successful grant spends the presented refresh token and issues a new pair; a spent or unknown refresh
token gets 400 `invalid_grant`. Tests can script answers (429 with retry-after, 5xx, a dropped connection,
a 200 without access_token), slow the endpoint down before it rotates (so a kill lands mid-grant with the login
still alive), and read the number of grants and the recorded requests.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
PATH = "/v1/oauth/token"


@dataclass
class Scripted:
    """One canned answer, used instead of the real grant logic for one request."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


@dataclass
class Login:
    access_token: str
    refresh_token: str
    expires_in: int


class FakeOAuthServer:
    def __init__(
        self, expires_in: int = 28800, client_id: str = CLIENT_ID, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.expires_in = expires_in
        self.client_id = client_id
        self.delay = 0.0  # seconds to wait before handling a grant (before rotating)
        self.omit_refresh_token = False  # answer without refresh_token (no rotation)
        self.echo_token_in_errors = False  # put the presented token into error descriptions (tests masking)
        # A real endpoint finishes a grant whose client vanished (the new tokens are lost with the client). With
        # False the fake models an endpoint that does not commit a rotation it cannot deliver.
        self.commit_when_client_gone = True
        self.grants = 0
        self.requests: list[dict[str, Any]] = []
        self.request_started = threading.Event()
        self._script: deque[Scripted] = deque()
        self._valid: set[str] = set()
        self._spent: set[str] = set()
        self._issued: list[str] = []
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-oauth", daemon=True
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeOAuthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    # ------------------------------------------------------------------ state
    def login(self) -> Login:
        """A fresh login: a valid refresh token (as `claude auth login` would leave in the file)."""
        with self._lock:
            return self._issue()

    def script(self, *answers: Scripted) -> None:
        with self._lock:
            self._script.extend(answers)

    def current_refresh_token(self) -> str | None:
        with self._lock:
            return next(iter(self._valid)) if len(self._valid) == 1 else None

    def is_valid(self, refresh_token: str) -> bool:
        with self._lock:
            return refresh_token in self._valid

    def issued(self) -> Iterator[str]:
        """Every token this fake ever handed out (to assert none leaks into output)."""
        with self._lock:
            return iter(list(self._issued))

    def _issue(self) -> Login:
        n = next(self._counter)
        login = Login(f"sk-ant-oat01-test-{n:04d}", f"sk-ant-ort01-test-{n:04d}", self.expires_in)
        self._valid.add(login.refresh_token)
        self._issued += [login.access_token, login.refresh_token]
        return login

    # ------------------------------------------------------------------ HTTP
    def _answer(self, body: bytes, headers: dict[str, str], connected: Callable[[], bool]) -> Scripted:
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        content_type = headers.get("content-type", "")
        with self._lock:
            self.requests.append({"body": request, "headers": headers})
            if self._script:
                return self._script.popleft()
        self.request_started.set()
        if self.delay:
            time.sleep(self.delay)
        if not self.commit_when_client_gone and not connected():
            return Scripted(drop=True)
        if not content_type.startswith("application/json") or not isinstance(request, dict):
            return Scripted(400, {"error": "invalid_request", "error_description": "expected a JSON body"})
        if request.get("grant_type") != "refresh_token":
            return Scripted(400, {"error": "unsupported_grant_type"})
        if request.get("client_id") != self.client_id:
            return Scripted(400, {"error": "invalid_client", "error_description": "unknown client"})
        presented = request.get("refresh_token")
        with self._lock:
            if not isinstance(presented, str) or presented not in self._valid:
                reused = isinstance(presented, str) and presented in self._spent
                description = "Refresh token already used" if reused else "Invalid refresh token"
                if self.echo_token_in_errors:
                    description += f": {presented}"
                return Scripted(400, {"error": "invalid_grant", "error_description": description})
            self.grants += 1
            if self.omit_refresh_token:
                n = next(self._counter)
                access = f"sk-ant-oat01-test-{n:04d}"
                self._issued.append(access)
                return Scripted(200, {"access_token": access, "expires_in": self.expires_in, "token_type": "Bearer"})
            self._valid.discard(presented)
            self._spent.add(presented)
            login = self._issue()
        return Scripted(
            200,
            {
                "access_token": login.access_token,
                "refresh_token": login.refresh_token,
                "expires_in": login.expires_in,
                "token_type": "Bearer",
                "scope": "user:inference user:profile",
            },
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The head and the body go out in separate writes: with Nagle's algorithm the body then waits for the
            # client's delayed ACK of the head, about 40 ms per answer.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.path != PATH:
                    self._send(Scripted(404, {"error": "not_found"}))
                    return
                answer = fake._answer(body, {k.lower(): v for k, v in self.headers.items()}, self._connected)
                if answer.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                self._send(answer)

            def _connected(self) -> bool:
                sock = self.connection
                readable, _, _ = select.select([sock], [], [], 0)
                if not readable:
                    return True
                try:
                    return sock.recv(1, socket.MSG_PEEK) != b""
                except OSError:
                    return False

            def _send(self, answer: Scripted) -> None:
                if isinstance(answer.body, bytes | str):
                    payload = answer.body.encode() if isinstance(answer.body, str) else answer.body
                    content_type = "text/plain"
                else:
                    payload = json.dumps(answer.body).encode()
                    content_type = "application/json"
                self.send_response(answer.status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        return Handler
