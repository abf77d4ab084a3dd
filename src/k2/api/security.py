"""API keys and per-key rate limits, as one ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware).

A key may come in ``X-API-Key``, ``Authorization: Bearer``, the ``api_key`` query parameter (WebSocket clients
and the dashboard page, which browsers cannot give headers) or the ``k2_api_key`` cookie, which the dashboard
page sets when it is opened with ``?api_key=`` so its scripts, API calls and WebSocket carry it. Keys are
compared in constant time and never logged; metrics and logs name a key by its position (``key1``...).
"""

from __future__ import annotations

import hmac
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

import orjson

OPEN_PATHS = ("/health",)
COOKIE = "k2_api_key"


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when a request may go now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _key_from(scope) -> str | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    if "x-api-key" in headers:
        return headers["x-api-key"].strip()
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if qs.get("api_key"):
        return qs["api_key"][0]
    if "cookie" in headers:
        jar = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:
            return None
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


class Guard:
    """Authentication, rate limiting and request metrics around the app."""

    def __init__(self, app, *, keys: tuple[str, ...], rate: float, burst: int, metrics=None) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)
        self.rate = rate
        self.burst = burst
        self.metrics = metrics
        self.buckets: dict[str, TokenBucket] = {}

    def _identify(self, scope) -> tuple[str | None, str | None]:
        """(who, error): who names the key (key1...) or the client address without keys."""
        if not self.keys:
            client = scope.get("client")
            return (client[0] if client else "anonymous"), None
        given = _key_from(scope)
        if not given:
            return None, "an API key is required: send it in X-API-Key (or Authorization: Bearer, or ?api_key=)"
        raw = given.encode()
        for n, key in enumerate(self.keys, 1):
            if hmac.compare_digest(raw, key):
                return f"key{n}", None
        return None, "unknown API key"

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        who, error = self._identify(scope)
        if error is not None:
            await _refuse(scope, receive, send, 401, error)
            self._observe(scope, 401, start)
            return
        if self.rate > 0:
            bucket = self.buckets.get(who)
            if bucket is None:
                bucket = self.buckets[who] = TokenBucket(self.rate, self.burst)
            wait = bucket.take()
            if wait > 0:
                await _refuse(scope, receive, send, 429, f"rate limit of {self.rate:g} requests/s exceeded; retry "
                              f"after {wait:.2f} s", retry_after=wait)
                if self.metrics is not None:
                    self.metrics.rate_limited(_route(scope))
                self._observe(scope, 429, start)
                return
        status = [0]

        async def send_wrapped(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if self.keys and scope["path"] in ("/", "/dashboard"):
                    # the page was opened with a valid ?api_key=: let its assets and calls carry it
                    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                    if qs.get("api_key"):
                        cookie = f"{COOKIE}={qs['api_key'][0]}; Path=/; HttpOnly; SameSite=Strict"
                        message = dict(message)
                        message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped if kind == "http" else send)
        finally:
            if kind == "http":
                self._observe(scope, status[0] or 500, start)

    def _observe(self, scope, status: int, start: float) -> None:
        if self.metrics is not None and scope["type"] == "http":
            self.metrics.observe_request(_route(scope), scope.get("method", "GET"), status,
                                         time.perf_counter() - start)


def _route(scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    return "/static" if scope["path"].startswith("/static/") else "other"


async def _refuse(scope, receive, send, status: int, error: str, retry_after: float | None = None) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008 if status == 401 else 1013, "reason": error[:120]})
        return
    body = orjson.dumps({"error": error, "status": status})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, int(retry_after + 0.999))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
