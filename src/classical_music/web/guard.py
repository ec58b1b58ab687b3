"""What the studio checks before a request reaches a route: its size, its Host and its Origin.

A plain ASGI middleware (not Starlette's @app.middleware, which hands the route an already
wrapped body stream) so that the body is counted as it arrives, whatever the framing.

* Body size: an honest Content-Length over the cap is refused at once; a chunked body (no
  Content-Length) is counted chunk by chunk and cut off the moment it passes the cap, so nothing
  beyond the cap is ever read, spooled or buffered.
* Host: a web page on attacker.example whose name is re-pointed at 127.0.0.1 (DNS rebinding)
  reaches the studio with `Host: attacker.example`. Only the names the server listens under are
  accepted: the --host it was given, and for loopback or wildcard addresses the loopback names
  (for a wildcard address also IP literals and this machine's own names: a browser that typed an
  IP address has no other site's name to rebind).
* Origin: a page on another site can POST to the studio (a form or fetch needs no CORS
  permission to be *sent*). State-changing requests whose Origin (or Sec-Fetch-Site) says they
  come from another site are refused with 403. Requests without Origin (curl, scripts) pass.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from urllib.parse import urlsplit

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def allowed_hosts(listen: str | None) -> set[str]:
    """Host names (lower case, no port, IPv6 without brackets) accepted for a listen address."""
    names = set(LOOPBACK_NAMES)
    if listen:
        host = listen.strip().strip("[]").lower()
        names.add(host)
        if host in ("0.0.0.0", "::", ""):
            names.add("*ip")  # any IP literal
            for name in (socket.gethostname(), socket.getfqdn()):
                if name:
                    names.add(name.lower())
    return names


def _split_host(value: str) -> str | None:
    """'Example.org:8000' -> 'example.org'; '[::1]:8000' -> '::1'; None when the port is not a
    port ('localhost:evil', 'localhost:', '[::1]x'): a Host is a name and at most a number."""
    value = value.strip().lower()
    if value.startswith("["):
        close = value.find("]")
        name, rest = (value[1:close], value[close + 1:]) if close > 0 else (None, "")
    elif value.count(":") == 1:
        name, rest = value.split(":")[0], value[value.index(":"):]
    else:
        name, rest = value, ""  # a bare name, or an IPv6 literal without brackets
    if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit() and 0 < int(rest[1:]) < 65536):
        return None
    return name


def host_ok(host: str, allowed: set[str]) -> bool:
    name = _split_host(host)
    if not name:
        return False
    if name in allowed:
        return True
    if "*ip" in allowed:
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False
    return False


class BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: body cap, Host check, cross-origin refusal (see the module docstring)."""

    def __init__(self, app, *, max_body: int, hosts: set[str], limit_text: str, larger: dict | None = None):
        self.app, self.max_body, self.hosts, self.limit_text = app, max_body, hosts, limit_text
        self.larger = larger or {}  # path -> (max_body, limit_text): the few routes allowed more

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not host_ok(headers.get("host", ""), self.hosts):
            return await _answer(send, 400, "this server does not answer to that Host name (only to the "
                                            "address it listens on; start it with --host NAME to add one)")
        if scope["method"] not in SAFE_METHODS and _cross_origin(headers):
            return await _answer(send, 403, "cross-origin request refused: use the studio's own page")
        max_body, limit_text = self.larger.get(scope.get("path", ""), (self.max_body, self.limit_text))
        size = headers.get("content-length", "")
        if size.isdigit() and int(size) > max_body:
            return await _answer(send, 413, f"request too large: {limit_text}")

        seen = 0
        over = started = False

        async def counted_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_body:
                    over = True  # stop reading here: the rest of the body is never pulled in
                    raise BodyTooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            if over:  # whatever the app makes of the cut-off body (FastAPI: a 400), the answer is 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not started:
            await _answer(send, 413, f"request too large: {limit_text}")


def _cross_origin(headers: dict) -> bool:
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":  # sandboxed frames, file:// pages, redirects across sites
        return True
    parts = urlsplit(origin)
    return parts.netloc.lower() != headers.get("host", "").strip().lower()


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
