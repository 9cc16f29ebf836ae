"""Deterministic non-text payloads: embedding vectors, a tiny PNG, WAV and MP3-like audio, and a
small multipart/form-data reader for uploaded audio."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import zlib

WAV_RATE_HZ = 8_000
SPEECH_MS_PER_CHAR = 50
_MP3_FRAME = b"\xff\xfb\x90\xc4" + bytes(413)  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz, mono
_MP3_FRAME_MS = 26


def unit_vector(key: bytes, dimensions: int) -> list[float]:
    raw = hashlib.shake_256(key).digest(2 * dimensions)
    values = struct.unpack(f"<{dimensions}h", raw)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def float32_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def png(seed: bytes, size: int = 8) -> bytes:
    """A valid `size`x`size` PNG of one colour chosen by `seed`."""
    rgb = hashlib.sha256(seed).digest()[:3]
    rows = b"".join(b"\x00" + rgb * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def speech_ms(text: str) -> int:
    return max(1, len(text)) * SPEECH_MS_PER_CHAR


def wav(duration_ms: int) -> bytes:
    """Silent 16-bit mono PCM in a RIFF/WAVE container."""
    pcm = bytes(2 * (WAV_RATE_HZ * duration_ms // 1000))
    fmt = struct.pack("<HHIIHH", 1, 1, WAV_RATE_HZ, 2 * WAV_RATE_HZ, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )


def mp3(duration_ms: int) -> bytes:
    """Silent MPEG audio frames: enough of an MP3 for players and content sniffers."""
    return _MP3_FRAME * max(1, duration_ms // _MP3_FRAME_MS)


def audio_seconds(data: bytes) -> float:
    """How long an uploaded file plays: from a WAV header when there is one, else by size at
    16 kB/s."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE" and len(data) >= 44:
        byte_rate = struct.unpack("<I", data[28:32])[0]
        if byte_rate:
            return round((len(data) - 44) / byte_rate, 2)
    return round(len(data) / 16_000, 2)


def parse_multipart(content_type: str, body: bytes) -> dict[str, str | bytes | list[bytes]]:
    """Form fields as text and files as bytes; files sent as an array (``image[]``) as a list of
    bytes under the name without brackets. Raises ValueError when the body is not
    multipart/form-data."""
    boundary = _boundary(content_type)
    fields: dict[str, str | bytes | list[bytes]] = {}
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no header")
        disposition = _disposition(head.decode("utf-8", "replace"))
        name = disposition.get("name")
        if name is None:
            continue
        content = content.removesuffix(b"\r\n")
        if name.endswith("[]") and "filename" in disposition:
            listed = fields.setdefault(name[:-2], [])
            if isinstance(listed, list):
                listed.append(content)
            continue
        fields[name] = content if "filename" in disposition else content.decode("utf-8")
    return fields


def _boundary(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise ValueError("expected multipart/form-data")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise ValueError("multipart/form-data without a boundary")


def _disposition(head: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() != "content-disposition":
            continue
        for param in value.split(";")[1:]:
            key, _, raw = param.strip().partition("=")
            found[key.lower()] = raw.strip('"')
    return found


def png_size(data: bytes) -> tuple[int, int] | None:
    """A PNG's width and height, or None when `data` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])
