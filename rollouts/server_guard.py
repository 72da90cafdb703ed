"""The ASGI middleware `rollouts.server` puts in front of every `vllm serve` it starts.

vLLM's own `--api-key` guards only `/v1/...`; its RL routes (`/pause`, `/update_weights`, ...) and
the rest answer anyone who can reach the port. This middleware asks for the key on every route but
`/health`, and lets `/update_weights` name only a complete safetensors file inside the transfer
directory the server created for itself (`GET /weight_updates` tells an authorised client where
that is, and how many updates it has let through). A bad update is answered 400 before it reaches the engine, so the model keeps
serving. vLLM loads it with `--middleware rollouts.server_guard.ServerGuard`; the key and the
directory come in the environment, never on the command line (`ps` shows argv to every user).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KEY_ENV = "ALIGN_SERVE_API_KEY"
WEIGHT_DIR_ENV = "ALIGN_WEIGHT_DIR"
OPEN_PATHS = frozenset({"/health"})
MAX_HEADER_BYTES = 100 * 2**20


def inside_weight_dir(path: str, weight_dir: str | None) -> Path:
    """`path` resolved, if it is a file inside `weight_dir`; ValueError otherwise."""
    if not weight_dir:
        raise ValueError("this server takes no weight updates (it has no transfer directory)")
    resolved, root = Path(path).resolve(), Path(weight_dir).resolve()
    if root not in resolved.parents:
        raise ValueError(f"{path} is outside the server's transfer directory {root}")
    if not resolved.is_file():
        raise ValueError(f"{path} is not a file")
    return resolved


def check_safetensors(path: Path) -> None:
    """ValueError unless `path` is a whole safetensors file: a JSON header whose tensors' byte
    ranges end exactly at the end of the file (a truncated or foreign file fails here, not in
    the engine, where a failed load would take the server down)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path} is not a safetensors file")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path} is not a safetensors file") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file")
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    try:
        end = max((int(t["data_offsets"][1]) for t in tensors), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise ValueError(f"{path} has a malformed safetensors header") from None
    if not tensors or 8 + header_len + end != size:
        raise ValueError(f"{path} is empty or truncated")


def update_error(body: bytes, weight_dir: str | None) -> str | None:
    """Why an `/update_weights` body must not reach the engine (None: it may)."""
    try:
        path = json.loads(body)["update_info"]["path"]
    except (ValueError, KeyError, TypeError):
        return 'expected {"update_info": {"path": ...}}'
    if not isinstance(path, str):
        return "update_info.path must be a string"
    try:
        check_safetensors(inside_weight_dir(path, weight_dir))
    except (ValueError, OSError) as err:
        return str(err)
    return None


class ServerGuard:
    """Pure ASGI middleware: the API key on every route but `/health`; checked weight updates."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        key = os.environ.get(KEY_ENV)
        self.key_digest = hashlib.sha256(key.encode()).digest() if key else None
        self.weight_dir = os.environ.get(WEIGHT_DIR_ENV) or None
        self.updates_accepted = 0

    def authorised(self, headers: Headers) -> bool:
        if self.key_digest is None:
            return True
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        digest = hashlib.sha256(token.encode()).digest()
        return scheme.lower() == "bearer" and secrets.compare_digest(digest, self.key_digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if path not in OPEN_PATHS and not self.authorised(Headers(scope=scope)):
            await JSONResponse({"error": "Unauthorized"}, status_code=401)(scope, receive, send)
            return
        if path == "/weight_updates":
            if self.weight_dir is None:
                answer = JSONResponse({"error": "this server takes no weight updates"}, status_code=404)
            else:
                answer = JSONResponse({"path": self.weight_dir, "accepted": self.updates_accepted})
            await answer(scope, receive, send)
            return
        if path == "/update_weights" and scope.get("method") == "POST":
            body = await read_body(receive)
            error = update_error(body, self.weight_dir)
            if error is not None:
                await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
                return
            self.updates_accepted += 1
            receive = replay(body, receive)
        await self.app(scope, receive, send)


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, original: Receive) -> Receive:
    """A `receive` that hands the already-read body to the app once, then defers to `original`."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive
