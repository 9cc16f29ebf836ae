"""A loopback upstream that replays a provider's recorded answers (tests/recordings/<preset>/)
and keeps every request it got, for tests to compare with the provider's documented format."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

RECORDINGS = Path(__file__).parent / "recordings"


def event_stream_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream message (the framing of Bedrock's converse-stream); an event type
    ending in ``Exception`` is sent as an exception message."""
    kind = ":exception-type" if event_type.endswith("Exception") else ":event-type"
    message_type = "exception" if event_type.endswith("Exception") else "event"
    headers = b""
    for name, value in (
        (kind, event_type),
        (":content-type", "application/json"),
        (":message-type", message_type),
    ):
        raw = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def sigv4_signature_valid(request: dict[str, Any], *, secret_key: str) -> bool:
    """Recompute an AWS SigV4 signature from the request exactly as it arrived (path, query,
    the signed headers, body), as AWS would, and compare it with the one sent."""
    authorization = request["headers"]["authorization"]
    fields = dict(part.strip().split("=", 1) for part in authorization.split(" ", 1)[1].split(","))
    access_key, date, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    query = "&".join(f"{k}={v}" for k, v in request["query"].items())
    url = f"http://{request['headers']['host']}{request['path']}" + (f"?{query}" if query else "")
    received = AWSRequest(
        method=request["method"],
        url=url,
        data=request["raw_body"],
        headers={name: request["headers"][name] for name in signed},
    )
    received.context["timestamp"] = request["headers"]["x-amz-date"]
    auth = SigV4Auth(Credentials(access_key, secret_key), service, region)
    canonical = auth.canonical_request(received)
    expected = auth.signature(auth.string_to_sign(received, canonical), received)
    return bool(expected == fields["Signature"] and date == received.context["timestamp"][:8])


class Replay:
    """An ASGI app: answers from the current recording and keeps the requests."""

    def __init__(self) -> None:
        self.preset = ""
        self.requests: list[dict[str, Any]] = []
        self.override: dict[str, Any] | None = None  # a JSON answer to give instead
        self.events: list[list[Any]] | None = None  # Bedrock stream events to give instead
        self.url = ""  # where it listens (set by the test fixture)

    def load(self, preset: str, name: str) -> Any:
        path = RECORDINGS / preset / name
        return json.loads(path.read_text()) if name.endswith(".json") else path.read_text()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = {
            "method": scope["method"],
            "path": scope.get("raw_path", scope["path"].encode()).decode().split("?")[0],
            "query": dict(parse_qsl(scope["query_string"].decode())),
            "headers": headers,
            "body": json.loads(body) if body else None,
            "raw_body": body,
        }
        self.requests.append(request)
        status, content_type, content = self.answer(request)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})

    def answer(self, request: dict[str, Any]) -> tuple[int, str, bytes]:
        path, body = request["path"], request["body"] or {}
        if request["method"] == "GET":
            if request["query"].get("after_id"):
                return (
                    200,
                    "application/json",
                    json.dumps(self.load(self.preset, "models-page2.json")).encode(),
                )
            return (
                200,
                "application/json",
                json.dumps(self.load(self.preset, "models.json")).encode(),
            )
        if path.endswith("/converse-stream"):
            name = "tool-stream.json" if body.get("toolConfig") else "stream.json"
            events = self.events or self.load(self.preset, name)["events"]
            content = b"".join(event_stream_message(kind, obj) for kind, obj in events)
            return 200, "application/vnd.amazon.eventstream", content
        if path.endswith("/converse") and body.get("toolConfig"):
            return (
                200,
                "application/json",
                json.dumps(self.load(self.preset, "tool.json")["response"]).encode(),
            )
        if body.get("stream"):
            return 200, "text/event-stream", self.load(self.preset, "stream.txt").encode()
        if self.override is not None:
            return 200, "application/json", json.dumps(self.override).encode()
        return (
            200,
            "application/json",
            json.dumps(self.load(self.preset, "chat.json")["response"]).encode(),
        )
