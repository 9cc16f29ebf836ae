"""Embeddings, audio and images: what a request may ask for, how long an uploaded recording
plays, and how many billing units (tokens, seconds, characters, images) a request uses.

Pure functions; the views in ``gateway/views/media.py`` do the I/O. Billing units, as the docs
state them: embeddings per 1M input tokens; transcription per second of audio, rounded up, with a
10-second minimum per request; speech per 1M input characters; images per image returned.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from typing import Any

from gateway import errors, tokens

TRANSCRIPTION_MIN_SECONDS = 10
# Formats the docs promise; .mpeg/.mpga are MP3 by another name, as OpenAI accepts them.
AUDIO_FORMATS = ("mp3", "mpeg", "mpga", "wav", "m4a", "mp4", "webm")
TRANSCRIPTION_RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
# Without a readable duration in the container we assume 128 kbit/s, the common default.
ESTIMATE_BYTES_PER_SECOND = 16_000
SPEECH_MAX_CHARACTERS = 4096
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEECH_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# OpenAI's built-in voices, and the ones open TTS models (Orpheus) serve.
VOICES = frozenset(
    {
        *("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer"),
        *("verse", "marin", "cedar", "natural", "tara", "leah", "jess", "leo", "dan", "mia"),
        *("zac", "zoe"),
    }
)
IMAGE_SIZES = (
    "256x256",
    "512x512",
    "1024x1024",
    "1024x1536",
    "1536x1024",
    "1024x1792",
    "1792x1024",
)
IMAGE_RESPONSE_FORMATS = ("url", "b64_json")
IMAGE_MAX_N = 10
EMBEDDING_MAX_INPUTS = 2048
EMBEDDING_FORMATS = ("float", "base64")


# --- embeddings --------------------------------------------------------------------------------


def embedding_inputs(body: dict[str, Any]) -> list[str | list[int]]:
    """``input`` as a list of strings or token arrays; a 400 for anything else."""
    value = body.get("input")
    items: list[Any]
    is_one_token_array = isinstance(value, list) and value and all(_is_token(v) for v in value)
    if isinstance(value, str) or is_one_token_array:
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise errors.BadRequest(
            "'input' must be a non-empty string, array of strings, array of tokens, or array of "
            "token arrays.",
            param="input",
        )
    if len(items) > EMBEDDING_MAX_INPUTS:
        raise errors.BadRequest(
            f"'input' holds {len(items)} items; the limit is {EMBEDDING_MAX_INPUTS}.", param="input"
        )
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise errors.BadRequest(f"input[{i}] is an empty string.", param="input")
        elif not (isinstance(item, list) and item and all(_is_token(t) for t in item)):
            raise errors.BadRequest(
                f"input[{i}] must be a non-empty string or a non-empty array of token ids.",
                param="input",
            )
    return items


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_embedding_options(body: dict[str, Any]) -> None:
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in EMBEDDING_FORMATS:
        raise errors.BadRequest(
            f"'encoding_format' must be one of {', '.join(EMBEDDING_FORMATS)}.",
            param="encoding_format",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise errors.BadRequest("'dimensions' must be a positive integer.", param="dimensions")


def embedding_tokens(items: list[str | list[int]]) -> int:
    """Input tokens by our tokenizer: for the reservation, and the bill when the upstream gives
    no usage."""
    return sum(tokens.count_text(i) if isinstance(i, str) else len(i) for i in items)


# --- transcription -----------------------------------------------------------------------------


def audio_format(filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix not in AUDIO_FORMATS:
        raise errors.BadRequest(
            f"Unsupported audio file '{filename}': send mp3, wav, m4a, webm or mp4 "
            "(the file name's extension tells us which).",
            param="file",
        )
    return suffix


def check_transcription_options(fields: dict[str, str]) -> None:
    fmt = fields.get("response_format")
    if fmt is not None and fmt not in TRANSCRIPTION_RESPONSE_FORMATS:
        raise errors.BadRequest(
            f"'response_format' must be one of {', '.join(TRANSCRIPTION_RESPONSE_FORMATS)}.",
            param="response_format",
        )
    language = fields.get("language")
    if language is not None and not (2 <= len(language) <= 3 and language.isalpha()):
        raise errors.BadRequest(
            "'language' must be an ISO-639-1 code such as 'en' or 'de'.", param="language"
        )
    temperature = fields.get("temperature")
    if temperature is not None:
        try:
            value = float(temperature)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1:
            raise errors.BadRequest(
                "'temperature' must be a number from 0 to 1.", param="temperature"
            )


def check_translation_options(fields: dict[str, str]) -> None:
    """A translation takes no ``language``: its output is always English."""
    if "language" in fields:
        raise errors.BadRequest(
            "'language' is not a translation option: translations are always into English "
            "(use /audio/transcriptions to transcribe in the spoken language).",
            param="language",
        )
    check_transcription_options(fields)


def audio_seconds(data: bytes, fmt: str) -> tuple[float, bool]:
    """How long a recording plays, and whether that is an estimate. Read from the container where
    we can (WAV header, MP3 frame headers, MP4/M4A ``mvhd``, WebM ``Duration``); a file that
    claims a format but is not one is a 400; a container without a duration is estimated at
    128 kbit/s."""
    if not data:
        raise errors.BadRequest("The uploaded audio file is empty.", param="file")
    if fmt == "wav":
        return _wav_seconds(data), False
    if fmt in ("mp3", "mpeg", "mpga"):
        return _mp3_seconds(data), False
    found = _mp4_seconds(data) if fmt in ("m4a", "mp4") else _webm_seconds(data)
    if found is not None:
        return found, False
    return len(data) / ESTIMATE_BYTES_PER_SECOND, True


def billable_seconds(seconds: float) -> int:
    """Whole seconds, rounded up, never below the 10-second minimum."""
    return max(TRANSCRIPTION_MIN_SECONDS, math.ceil(seconds))


def _not_audio(kind: str) -> errors.BadRequest:
    return errors.BadRequest(f"The uploaded file is not a readable {kind} file.", param="file")


def _wav_seconds(data: bytes) -> float:
    try:
        with wave.open(io.BytesIO(data)) as reader:
            rate = reader.getframerate()
            frames = reader.getnframes()
    except (wave.Error, EOFError, struct.error):
        # Not PCM (the stdlib reads PCM only): take the byte rate from the fmt chunk.
        byte_rate, size = _riff_rates(data)
        if not byte_rate:
            raise _not_audio("WAV") from None
        return size / byte_rate
    if not rate:
        raise _not_audio("WAV")
    return frames / rate


def _riff_rates(data: bytes) -> tuple[int, int]:
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0, 0
    pos, byte_rate, size = 12, 0, 0
    while pos + 8 <= len(data):
        tag, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if tag == b"fmt " and length >= 16:
            byte_rate = struct.unpack("<I", data[pos + 16 : pos + 20])[0]
        elif tag == b"data":
            size = min(length, len(data) - pos - 8)
        pos += 8 + length + (length & 1)
    return byte_rate, size


_MP3_BITRATES = {  # kbit/s by (version is MPEG-1, layer) and the 4-bit index
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000), 0: (11_025, 12_000, 8_000)}


def _mp3_seconds(data: bytes) -> float:
    """Sum the frames: each header gives its length in bytes and in samples."""
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
        pos = 10 + size
    seconds = 0.0
    frames = 0
    while pos + 4 <= len(data):
        frame = _mp3_frame(data[pos : pos + 4])
        if frame is None:
            if frames:
                break  # trailing tags (ID3v1, APE) after the audio
            pos += 1  # resynchronise on junk before the first frame
            continue
        length, samples, rate = frame
        seconds += samples / rate
        frames += 1
        pos += length
    if not frames:
        raise _not_audio("MP3")
    return seconds


def _mp3_frame(header: bytes) -> tuple[int, int, int] | None:
    """(frame bytes, samples, sample rate) for a valid MPEG audio frame header, else None."""
    if header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3
    layer = 4 - ((header[1] >> 1) & 3)
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _MP3_BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4, 384, rate
    samples = 1152 if layer == 2 or mpeg1 else 576
    return samples // 8 * bitrate // rate + padding, samples, rate


def _mp4_seconds(data: bytes) -> float | None:
    moov = _mp4_box(data, b"moov")
    if moov is None:
        raise _not_audio("MP4/M4A")
    mvhd = _mp4_box(moov, b"mvhd")
    if mvhd is None or len(mvhd) < 20:
        return None
    if mvhd[0] == 1 and len(mvhd) >= 32:
        scale, duration = struct.unpack(">IQ", mvhd[20:32])
    else:
        scale, duration = struct.unpack(">II", mvhd[12:20])
    return duration / scale if scale else None


def _mp4_box(data: bytes, kind: bytes) -> bytes | None:
    pos = 0
    while pos + 8 <= len(data):
        size, tag = struct.unpack(">I4s", data[pos : pos + 8])
        head = 8
        if size == 1 and pos + 16 <= len(data):
            size, head = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = len(data) - pos
        if size < head:
            return None
        if tag == kind:
            return data[pos + head : pos + size]
        pos += size
    return None


_EBML_HEADER, _SEGMENT, _INFO = 0x1A45DFA3, 0x18538067, 0x1549A966
_TIMECODE_SCALE, _DURATION = 0x2AD7B1, 0x4489


def _webm_seconds(data: bytes) -> float | None:
    """Segment > Info > Duration (a float in TimecodeScale units, nanoseconds each)."""
    try:
        element, size, body_at = _ebml_element(data, 0)
        if element != _EBML_HEADER:
            raise _not_audio("WebM")
        pos = body_at + size
        element, size, body_at = _ebml_element(data, pos)
        if element != _SEGMENT:
            return None
        end = min(len(data), body_at + size)
        pos = body_at
        while pos < end:
            element, size, body_at = _ebml_element(data, pos)
            if element == _INFO:
                return _webm_info_seconds(data[body_at : body_at + size])
            pos = body_at + size
    except (IndexError, struct.error, ValueError):
        return None
    return None


def _webm_info_seconds(info: bytes) -> float | None:
    scale, duration, pos = 1_000_000, None, 0
    while pos < len(info):
        element, size, body_at = _ebml_element(info, pos)
        value = info[body_at : body_at + size]
        if element == _TIMECODE_SCALE:
            scale = int.from_bytes(value, "big")
        elif element == _DURATION:
            duration = struct.unpack(">f" if size == 4 else ">d", value)[0]
        pos = body_at + size
    return duration * scale / 1e9 if duration is not None else None


def _ebml_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """(id, size, where the body starts); an unknown size reads as 'to the end'."""
    element, length = _vint(data, pos, keep_marker=True)
    size, size_length = _vint(data, pos + length, keep_marker=False)
    return element, size, pos + length + size_length


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError("bad EBML variable-length integer")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = value << 8 | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        value = len(data)
    return value, length


# --- speech and images -------------------------------------------------------------------------


def speech_characters(body: dict[str, Any]) -> int:
    """Check a speech request; returns the characters billed (the whole ``input``)."""
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise errors.BadRequest("'input' must be a non-empty string.", param="input")
    if len(text) > SPEECH_MAX_CHARACTERS:
        raise errors.BadRequest(
            f"'input' is {len(text):,} characters; the limit is {SPEECH_MAX_CHARACTERS:,}.",
            param="input",
        )
    voice = body.get("voice")
    if isinstance(voice, dict):
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice:
        raise errors.BadRequest("'voice' is required.", param="voice")
    if voice not in VOICES and not voice.startswith("voice_"):
        raise errors.BadRequest(
            f"Unknown voice '{voice}'. Voices: {', '.join(sorted(VOICES))}.", param="voice"
        )
    fmt = body.get("response_format")
    if fmt is not None and fmt not in SPEECH_FORMATS:
        raise errors.BadRequest(
            f"'response_format' must be one of {', '.join(SPEECH_FORMATS)}.",
            param="response_format",
        )
    speed = body.get("speed")
    if speed is not None and (
        not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4
    ):
        raise errors.BadRequest("'speed' must be a number from 0.25 to 4.0.", param="speed")
    return len(text)


def image_count(body: dict[str, Any]) -> int:
    """Check an image request; returns how many images it asks for."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise errors.BadRequest("'prompt' must be a non-empty string.", param="prompt")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= IMAGE_MAX_N:
        raise errors.BadRequest(f"'n' must be an integer from 1 to {IMAGE_MAX_N}.", param="n")
    size = body.get("size")
    if size is not None and size != "auto" and size not in IMAGE_SIZES:
        raise errors.BadRequest(
            f"Size '{size}' is not offered. Sizes: {', '.join(IMAGE_SIZES)}.", param="size"
        )
    fmt = body.get("response_format")
    if fmt is not None and fmt not in IMAGE_RESPONSE_FORMATS:
        raise errors.BadRequest(
            "'response_format' must be 'url' or 'b64_json'.", param="response_format"
        )
    return n


# --- image edits and variations ------------------------------------------------------------------

IMAGE_EDIT_MAX_BYTES = 50 * 1024 * 1024
IMAGE_VARIATION_MAX_BYTES = 4 * 1024 * 1024
IMAGE_EDIT_MAX_IMAGES = 16
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"RIFF": "webp"}


def image_format(data: bytes) -> str:
    """png, jpeg or webp, by the file's own bytes (not its name); '' for anything else."""
    for magic, kind in _IMAGE_MAGIC.items():
        if data.startswith(magic) and (kind != "webp" or data[8:12] == b"WEBP"):
            return kind
    return ""


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height, from its IHDR chunk."""
    if image_format(data) != "png" or len(data) < 24:
        return 0, 0
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_image_options(fields: dict[str, str]) -> int:
    raw = fields.get("n") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= IMAGE_MAX_N:
        raise errors.BadRequest(f"'n' must be an integer from 1 to {IMAGE_MAX_N}.", param="n")
    size = fields.get("size")
    if size is not None and size != "auto" and size not in IMAGE_SIZES:
        raise errors.BadRequest(
            f"Size '{size}' is not offered. Sizes: {', '.join(IMAGE_SIZES)}.", param="size"
        )
    fmt = fields.get("response_format")
    if fmt is not None and fmt not in IMAGE_RESPONSE_FORMATS:
        raise errors.BadRequest(
            "'response_format' must be 'url' or 'b64_json'.", param="response_format"
        )
    return int(raw)


def _check_upload(param: str, data: bytes, limit: int, formats: tuple[str, ...]) -> str:
    if not data:
        raise errors.BadRequest(f"The uploaded '{param}' file is empty.", param=param)
    if len(data) > limit:
        raise errors.BadRequest(
            f"The '{param}' file is {len(data):,} bytes; the limit is {limit:,}.", param=param
        )
    kind = image_format(data)
    if kind not in formats:
        raise errors.BadRequest(
            f"The '{param}' file must be a {' or '.join(f.upper() for f in formats)} image.",
            param=param,
            code="invalid_image_format",
        )
    return kind


def image_edit_count(
    fields: dict[str, str],
    images: list[tuple[str, bytes, str]],
    masks: list[tuple[str, bytes, str]] | None,
) -> int:
    """Check an edit (image(s), optional PNG mask the size of the first image, a prompt);
    returns how many images it asks for."""
    prompt = fields.get("prompt")
    if not prompt or not prompt.strip():
        raise errors.BadRequest("'prompt' must be a non-empty string.", param="prompt")
    if len(images) > IMAGE_EDIT_MAX_IMAGES:
        raise errors.BadRequest(
            f"At most {IMAGE_EDIT_MAX_IMAGES} images can be edited together.", param="image"
        )
    for _, data, _ in images:
        _check_upload("image", data, IMAGE_EDIT_MAX_BYTES, ("png", "jpeg", "webp"))
    if masks:
        if len(masks) > 1:
            raise errors.BadRequest("Send one 'mask'.", param="mask")
        mask = masks[0][1]
        _check_upload("mask", mask, IMAGE_EDIT_MAX_BYTES, ("png",))
        first = png_size(images[0][1])
        if first != (0, 0) and png_size(mask) != first:
            raise errors.BadRequest(
                "The mask must have the same width and height as the image.", param="mask"
            )
    return _check_image_options(fields)


def image_variation_count(fields: dict[str, str], images: list[tuple[str, bytes, str]]) -> int:
    """Check a variation (one square PNG under 4 MB, as the API asks); returns the count."""
    if len(images) != 1:
        raise errors.BadRequest("Send exactly one 'image' to vary.", param="image")
    data = images[0][1]
    _check_upload("image", data, IMAGE_VARIATION_MAX_BYTES, ("png",))
    width, height = png_size(data)
    if width != height:
        raise errors.BadRequest(f"The image must be square; it is {width}x{height}.", param="image")
    return _check_image_options(fields)
