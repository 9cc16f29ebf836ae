"""Embeddings, audio and images through the official OpenAI SDK, against the running gateway in
front of the simulator: the answers, and exactly one usage record each at the right unit cost."""

from __future__ import annotations

import base64
import io
import struct
import wave
import zlib
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from billing import ledger, money
from gateway import media, metering
from gateway.models import CatalogModel, UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

EMBED_PRICE = 20_000  # micro-dollars per 1M tokens
SECOND_PRICE = 100  # per second of audio
CHARACTER_PRICE = 15_000_000  # per 1M characters
IMAGE_PRICE = 40_000  # per image


def oai(live: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live['url']}/openai/v1/", api_key=live["secret"], max_retries=0
    )


def records(**filters: Any) -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(**filters).order_by("created_at"))


@pytest.fixture
def media_models(live: dict[str, Any]) -> dict[str, Any]:
    up = live["openai"]
    factories.model(
        "sim-embed",
        routes=[(up, "sim-embed")],
        kind=CatalogModel.Kind.EMBEDDING,
        input_price_micros=EMBED_PRICE,
        output_price_micros=0,
    )
    unit_priced = {"input_price_micros": None, "output_price_micros": None}
    factories.model(
        "sim-whisper",
        routes=[(up, "sim-whisper")],
        kind=CatalogModel.Kind.TRANSCRIPTION,
        unit=CatalogModel.Unit.SECONDS,
        unit_price_micros=SECOND_PRICE,
        **unit_priced,
    )
    factories.model(
        "sim-tts",
        routes=[(up, "sim-tts")],
        kind=CatalogModel.Kind.SPEECH,
        unit=CatalogModel.Unit.CHARACTERS,
        unit_price_micros=CHARACTER_PRICE,
        **unit_priced,
    )
    factories.model(
        "sim-image",
        routes=[(up, "sim-image")],
        kind=CatalogModel.Kind.IMAGE,
        unit=CatalogModel.Unit.IMAGES,
        unit_price_micros=IMAGE_PRICE,
        **unit_priced,
    )
    return live


def wav_bytes(seconds: float, rate: int = 8_000) -> bytes:
    """A real WAV file (a quiet tone) written with the stdlib."""
    frames = int(seconds * rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"".join(struct.pack("<h", (i % 40) * 50) for i in range(frames)))
    return out.getvalue()


# --- embeddings --------------------------------------------------------------------------------


def test_it_embeds_a_string_and_bills_its_input_tokens(media_models):
    done = oai(media_models).embeddings.create(model="sim-embed", input="Token Factory embeds")
    assert done.model == "sim-embed"
    assert len(done.data) == 1 and len(done.data[0].embedding) > 8
    assert done.usage.prompt_tokens > 0
    (record,) = records(endpoint="embeddings")
    assert record.status == 200
    assert record.model == "sim-embed"
    assert record.input_tokens == done.usage.prompt_tokens
    assert record.cost_micros == money.request_cost(
        input_tokens=done.usage.prompt_tokens, input_price_micros=EMBED_PRICE
    )


def test_it_embeds_lists_token_arrays_base64_and_dimensions(media_models):
    client = oai(media_models)
    many = client.embeddings.create(model="sim-embed", input=["one", "two", "three"])
    assert [d.index for d in many.data] == [0, 1, 2]
    tokens = client.embeddings.create(model="sim-embed", input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2
    assert tokens.usage.prompt_tokens == 5
    short = client.embeddings.create(model="sim-embed", input="short", dimensions=16)
    assert len(short.data[0].embedding) == 16
    raw = client.embeddings.with_raw_response.create(
        model="sim-embed", input="packed", dimensions=8, encoding_format="base64"
    )
    packed = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(packed, str)
    assert len(base64.b64decode(packed)) == 8 * 4  # float32s
    found = records(endpoint="embeddings")
    assert len(found) == 4 and all(r.cost_micros > 0 for r in found)


def test_it_refuses_an_empty_embedding_input_at_no_cost(media_models):
    with pytest.raises(openai.BadRequestError) as caught:
        oai(media_models).embeddings.create(model="sim-embed", input=[])
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "input"
    (record,) = records(endpoint="embeddings")
    assert record.status == 400 and record.cost_micros == 0 and record.billed_micros == 0


def test_it_refuses_a_chat_model_on_the_embeddings_endpoint(media_models):
    with pytest.raises(openai.BadRequestError):
        oai(media_models).embeddings.create(model="sim-gpt", input="hello")


# --- transcription -----------------------------------------------------------------------------


def test_it_transcribes_a_real_wav_and_bills_the_ten_second_minimum(media_models, tmp_path: Path):
    path = tmp_path / "hello.wav"
    path.write_bytes(wav_bytes(3.2))
    with path.open("rb") as audio:
        done = oai(media_models).audio.transcriptions.create(
            model="sim-whisper", file=audio, language="en"
        )
    assert done.text
    (record,) = records(endpoint="transcriptions")
    assert record.status == 200
    assert record.cost_micros == 10 * SECOND_PRICE


def test_it_bills_longer_audio_per_started_second(media_models, tmp_path: Path):
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(12.4))
    with path.open("rb") as audio:
        done = oai(media_models).audio.transcriptions.create(
            model="sim-whisper", file=audio, response_format="verbose_json"
        )
    assert done.text
    assert done.duration == pytest.approx(12.4, abs=0.1)
    (record,) = records(endpoint="transcriptions")
    assert record.cost_micros == 13 * SECOND_PRICE


def test_it_answers_response_format_text_as_plain_text(media_models, tmp_path: Path):
    path = tmp_path / "note.wav"
    path.write_bytes(wav_bytes(1))
    with path.open("rb") as audio:
        text = oai(media_models).audio.transcriptions.create(
            model="sim-whisper", file=audio, response_format="text"
        )
    assert isinstance(text, str) and text


def test_it_reads_mp3_duration_from_frame_headers(media_models):
    frame = b"\xff\xfb\x90\xc4" + bytes(413)  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz: 26.1 ms
    mp3 = frame * 600  # 15.67 s
    done = oai(media_models).audio.transcriptions.create(
        model="sim-whisper", file=("speech.mp3", mp3, "audio/mpeg")
    )
    assert done.text
    (record,) = records(endpoint="transcriptions")
    assert record.cost_micros == 16 * SECOND_PRICE


def test_it_refuses_an_empty_audio_file_at_no_cost(media_models):
    with pytest.raises(openai.BadRequestError) as caught:
        oai(media_models).audio.transcriptions.create(
            model="sim-whisper", file=("empty.wav", b"", "audio/wav")
        )
    assert "empty" in caught.value.message
    (record,) = records(endpoint="transcriptions")
    assert record.status == 400 and record.cost_micros == 0


def test_it_refuses_a_file_that_is_not_the_audio_it_claims(media_models):
    with pytest.raises(openai.BadRequestError) as caught:
        oai(media_models).audio.transcriptions.create(
            model="sim-whisper", file=("fake.wav", b"not audio at all" * 10, "audio/wav")
        )
    assert "WAV" in caught.value.message


def test_it_refuses_an_unsupported_audio_format(media_models):
    with pytest.raises(openai.BadRequestError) as caught:
        oai(media_models).audio.transcriptions.create(
            model="sim-whisper", file=("notes.txt", b"hello", "text/plain")
        )
    assert caught.value.body["param"] == "file"


# --- speech ------------------------------------------------------------------------------------


def test_it_streams_speech_to_a_file_and_bills_per_character(media_models, tmp_path: Path):
    text = "Hello, welcome to Token Factory."
    target = tmp_path / "out.mp3"
    with oai(media_models).audio.speech.with_streaming_response.create(
        model="sim-tts", voice="natural", input=text
    ) as response:
        assert response.headers["content-type"].startswith("audio/mpeg")
        response.stream_to_file(target)
    audio = target.read_bytes()
    assert audio[:2] == b"\xff\xfb"
    assert len(audio) > 1000
    (record,) = records(endpoint="speech")
    assert record.status == 200
    assert record.cost_micros == money.request_cost(
        units=len(text), unit_price_micros=CHARACTER_PRICE, units_per_price=1_000_000
    )
    assert record.cost_micros == 480  # 32 characters at $15 per 1M


def test_it_streams_wav_speech(media_models):
    response = oai(media_models).audio.speech.create(
        model="sim-tts", voice="alloy", input="Short.", response_format="wav"
    )
    assert response.content[:4] == b"RIFF"


def test_it_refuses_an_unknown_voice_at_no_cost(media_models):
    with pytest.raises(openai.BadRequestError) as caught:
        oai(media_models).audio.speech.create(model="sim-tts", voice="robot-9000", input="Hi")
    assert "robot-9000" in caught.value.message
    (record,) = records(endpoint="speech")
    assert record.status == 400 and record.cost_micros == 0


# --- images ------------------------------------------------------------------------------------


def test_it_generates_images_and_bills_per_image(media_models):
    client = oai(media_models)
    done = client.images.generate(model="sim-image", prompt="A server farm at sunset", n=2)
    assert len(done.data) == 2
    assert done.data[0].url and done.data[0].url.startswith("data:image/png")
    b64 = client.images.generate(
        model="sim-image", prompt="A cat", size="1024x1024", response_format="b64_json"
    )
    assert base64.b64decode(b64.data[0].b64_json or "")[:4] == b"\x89PNG"
    found = records(endpoint="images")
    assert sorted(r.cost_micros for r in found) == [IMAGE_PRICE, 2 * IMAGE_PRICE]


def test_it_refuses_a_size_not_offered_at_no_cost(media_models):
    with pytest.raises(openai.BadRequestError) as caught:
        oai(media_models).images.generate(model="sim-image", prompt="A cat", size="123x456")
    assert caught.value.body["param"] == "size"
    (record,) = records(endpoint="images")
    assert record.status == 400 and record.cost_micros == 0


def test_it_refuses_an_unpriced_media_model(media_models):
    factories.model(
        "sim-image-free",
        routes=[(media_models["openai"], "sim-image")],
        kind=CatalogModel.Kind.IMAGE,
        unit=CatalogModel.Unit.IMAGES,
        unit_price_micros=None,
        input_price_micros=None,
        output_price_micros=None,
    )
    with pytest.raises(openai.InternalServerError) as caught:
        oai(media_models).images.generate(model="sim-image-free", prompt="A cat")
    assert caught.value.status_code == 503
    assert "no price" in caught.value.message


# --- durations read from other containers (pure) -------------------------------------------------


def _box(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), tag) + body


def _ebml(element: int, body: bytes) -> bytes:
    return (
        element.to_bytes((element.bit_length() + 7) // 8, "big") + bytes([0x80 | len(body)]) + body
    )


def test_it_reads_m4a_duration_from_the_movie_header():
    mvhd = struct.pack(">B3sIIII", 0, b"\0\0\0", 0, 0, 1000, 12_500) + bytes(80)
    m4a = _box(b"ftyp", b"M4A \0\0\0\0") + _box(b"moov", _box(b"mvhd", mvhd))
    assert media.audio_seconds(m4a, "m4a") == (12.5, False)


def test_it_reads_webm_duration_from_segment_info():
    info = _ebml(0x2AD7B1, (1_000_000).to_bytes(3, "big")) + _ebml(0x4489, struct.pack(">f", 4500))
    unknown_size = bytes([0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    webm = (
        _ebml(0x1A45DFA3, _ebml(0x4282, b"webm"))
        + bytes.fromhex("18538067")
        + unknown_size
        + _ebml(0x1549A966, info)
    )
    assert media.audio_seconds(webm, "webm") == (4.5, False)


def test_a_plan_pays_media_from_the_balance_not_the_token_window(media_models, tmp_path: Path):
    # A plan whose token window has room: chat tokens come out of the window, free; audio and
    # images are priced per unit, so they are paid from the prepaid balance, and refused (402,
    # nothing sent upstream, nothing charged) when it cannot cover them.
    owner = factories.UserFactory.create()
    acct = factories.account(owner=owner, plan_slug="pro")
    ledger.credit(account=acct, amount_micros=100_000, idempotency_key="topup-media")
    _, secret = factories.api_key(acct)
    client = openai.OpenAI(
        base_url=f"{media_models['url']}/openai/v1/", api_key=secret, max_retries=0
    )
    client.chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "hi"}])
    path = tmp_path / "hello.wav"
    path.write_bytes(wav_bytes(3.2))
    with path.open("rb") as audio:
        client.audio.transcriptions.create(model="sim-whisper", file=audio)
    client.images.generate(model="sim-image", prompt="A server farm", n=2)
    found = {r.endpoint: r for r in records(account=acct)}
    assert found["chat"].in_window and found["chat"].billed_micros == 0
    for endpoint, cost in (("transcriptions", 10 * SECOND_PRICE), ("images", 2 * IMAGE_PRICE)):
        assert not found[endpoint].in_window
        assert found[endpoint].billed_micros == found[endpoint].cost_micros == cost
    acct.refresh_from_db()
    assert acct.balance_micros == 100_000 - 10 * SECOND_PRICE - 2 * IMAGE_PRICE  # 19,000 left

    served = httpx.get(f"{media_models['sim']}/_sim/stats").json()["requests"]
    with pytest.raises(openai.APIStatusError) as poor:
        client.images.generate(model="sim-image", prompt="A server farm", n=1)
    assert poor.value.status_code == 402 and poor.value.code == "insufficient_quota"
    assert "costs $0.04 and your balance is $0.019" in poor.value.message
    assert httpx.get(f"{media_models['sim']}/_sim/stats").json()["requests"] == served
    refused = records(account=acct, status=402)
    assert len(refused) == 1 and refused[0].billed_micros == 0
    acct.refresh_from_db()
    assert acct.balance_micros == 19_000


# --- translations ------------------------------------------------------------------------------


def test_it_translates_audio_into_english_and_bills_like_transcription(media_models):
    client = oai(media_models)
    done = client.audio.translations.create(
        model="sim-whisper", file=("speech.wav", wav_bytes(12.4), "audio/wav")
    )
    assert done.text
    verbose = client.audio.translations.create(
        model="sim-whisper",
        file=("speech.wav", wav_bytes(3), "audio/wav"),
        response_format="verbose_json",
    )
    answer = verbose.to_dict()
    assert answer["task"] == "translate" and answer["language"] == "english"
    found = records(endpoint="translations")
    assert sorted(r.cost_micros for r in found) == [10 * SECOND_PRICE, 13 * SECOND_PRICE]
    assert all(r.status == 200 and r.model == "sim-whisper" for r in found)


def test_it_refuses_a_translation_language_at_no_cost(media_models):
    response = httpx.post(
        f"{media_models['url']}/v1/audio/translations",
        data={"model": "sim-whisper", "language": "de"},
        files={"file": ("a.wav", wav_bytes(1), "audio/wav")},
        headers={"authorization": f"Bearer {media_models['secret']}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "language"
    (record,) = records(endpoint="translations")
    assert record.status == 400 and record.cost_micros == 0


# --- image edits and variations ----------------------------------------------------------------


def png_bytes(width: int, height: int) -> bytes:
    rows = b"".join(b"\x00" + b"\x10\x20\x30\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_it_edits_images_with_a_mask_and_bills_per_image(media_models):
    client = oai(media_models)
    done = client.images.edit(
        model="sim-image",
        image=("room.png", png_bytes(16, 16), "image/png"),
        mask=("mask.png", png_bytes(16, 16), "image/png"),
        prompt="Add a window",
        n=2,
    )
    assert len(done.data) == 2 and (done.data[0].url or "").startswith("data:image/png")
    many = client.images.edit(
        model="sim-image",
        image=[
            ("a.png", png_bytes(8, 8), "image/png"),
            ("b.png", png_bytes(8, 8), "image/png"),
        ],
        prompt="Combine them",
        response_format="b64_json",
    )
    assert base64.b64decode(many.data[0].b64_json or "")[:4] == b"\x89PNG"
    found = records(endpoint="image_edits")
    assert sorted(r.cost_micros for r in found) == [IMAGE_PRICE, 2 * IMAGE_PRICE]


def test_it_makes_variations_and_bills_per_image(media_models):
    done = oai(media_models).images.create_variation(
        model="sim-image", image=("cat.png", png_bytes(8, 8), "image/png"), n=3
    )
    assert len(done.data) == 3
    (record,) = records(endpoint="image_variations")
    assert record.status == 200 and record.cost_micros == 3 * IMAGE_PRICE


@pytest.mark.parametrize(
    ("kind", "fields", "files", "param"),
    [
        ("edits", {}, {"image": ("a.png", "square")}, "prompt"),
        ("edits", {"prompt": "x"}, {"image": ("a.txt", "text")}, "image"),
        (
            "edits",
            {"prompt": "x"},
            {"image": ("a.png", "square"), "mask": ("m.png", "wide")},
            "mask",
        ),
        ("edits", {"prompt": "x", "n": "11"}, {"image": ("a.png", "square")}, "n"),
        ("variations", {}, {"image": ("a.png", "wide")}, "image"),
        ("variations", {"size": "1x1"}, {"image": ("a.png", "square")}, "size"),
        ("variations", {}, {}, "image"),
    ],
)
def test_it_refuses_bad_image_uploads_at_no_cost(media_models, kind, fields, files, param):
    contents = {"square": png_bytes(8, 8), "wide": png_bytes(16, 8), "text": b"hello there"}
    response = httpx.post(
        f"{media_models['url']}/openai/v1/images/{kind}",
        data={"model": "sim-image", **fields},
        files={k: (name, contents[c], "application/octet-stream") for k, (name, c) in files.items()}
        or {"other": ("x.bin", b"x", "application/octet-stream")},
        headers={"authorization": f"Bearer {media_models['secret']}"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    (record,) = records(endpoint=f"image_{kind}")
    assert record.status == 400 and record.cost_micros == 0
