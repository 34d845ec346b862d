"""Safe by default: the Host check (DNS rebinding), same-origin writes, authentication and the body limit.

An ASGI middleware in front of every route:
- ``Host`` must name the bound address, localhost (on loopback) or a configured name;
- a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` (or, without one, ``Referer``) is
  not this server (or a configured CORS origin) gets 403, ``Origin: null`` included;
- with ``--api-auth`` or ``--token`` configured, every request needs them (HTTP Basic or Bearer); with
  none configured (loopback only) an empty ``Authorization`` header is accepted;
- bodies over the limit get 413 before they are read in full.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from huihua.server.config import ServerConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _host_name(value: str) -> str:
    """The host part of a Host header value or URL netloc (no port, no brackets), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """The security middleware for ``app`` under ``config``."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        names = {config.host.lower().strip("[]"), *(h.lower() for h in config.allowed_hosts)}
        if config.loopback:
            names |= set(_LOOPBACK_NAMES)
        if config.host in ("0.0.0.0", "::"):
            names.discard(config.host)
        self.hosts = names
        self.origins = {o.rstrip("/").lower() for o in config.cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._check(scope["method"], headers)
        if refusal is not None:
            await _reply(send, *refusal)
            return
        length = headers.get("content-length")
        limit = self.config.limits.max_body_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, f"body: over the limit of {limit} bytes")
            return
        await self.app(scope, _limited(receive, limit), send)

    def _check(self, method: str, headers: dict[str, str]) -> tuple[int, str, dict[str, str]] | None:
        host = _host_name(headers.get("host", ""))
        checks_host = self.config.host not in ("0.0.0.0", "::") or bool(self.config.allowed_hosts)
        if checks_host and host not in self.hosts:
            return 403, "host: this server does not answer to that name", {}
        if method in _WRITES:
            origin = headers.get("origin")
            source = origin if origin is not None else headers.get("referer")
            if source is not None and not self._same_origin(source, headers.get("host", "")):
                return 403, "origin: cross-site requests are refused", {}
        if not self._authorized(headers.get("authorization")):
            challenge = {"www-authenticate": 'Basic realm="huihua"'} if self.config.basic_auth else {}
            return 401, "authorization: missing or wrong credentials", challenge
        return None

    def _same_origin(self, source: str, host_header: str) -> bool:
        if source.strip().lower() == "null":
            return False
        parts = urlsplit(source.strip())
        if not parts.scheme or not parts.netloc:
            return False
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        if origin in self.origins:
            return True
        return parts.netloc.lower() == host_header.strip().lower()

    def _authorized(self, header: str | None) -> bool:
        if not self.config.auth_configured:
            return True  # loopback without auth (serve refuses other binds): an empty header is fine
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.config.token is not None:
            return secrets.compare_digest(value.encode(), self.config.token.encode())
        if scheme.lower() == "basic" and self.config.basic_auth is not None:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return False
            want_user, want_password = self.config.basic_auth
            return secrets.compare_digest(user.encode(), want_user.encode()) & secrets.compare_digest(
                password.encode(), want_password.encode())
        return False


def _limited(receive: Receive, limit: int) -> Receive:
    seen = [0]

    async def wrapped() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body: over the limit of {limit} bytes")


async def _reply(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
