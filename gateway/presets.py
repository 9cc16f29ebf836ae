"""Provider presets: how each known kind of upstream is talked to, as data.

A preset fills a ``gateway.models.Provider``'s fields (protocol, URL, auth style, which field
carries the output limit, whether streams report usage, where its tokenizer is, which of our
headers it accepts). It is code, not rows: choosing one in the admin (``gateway/admin.py``) or
with ``manage.py addprovider --preset`` copies its values onto the provider, and the operator may
then change any of them. ``quirks`` are what an operator should know about that server; the
facts were checked against each provider's own documentation (the ``docs`` link).

A base URL template names what it needs in braces: ``{resource}`` (Azure OpenAI's resource
name), ``{region}`` (the AWS region). ``fill`` asks for exactly those.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any

from gateway.models import Provider

P = Provider


@dataclass(frozen=True, slots=True)
class Preset:
    key: str
    name: str
    protocol: str
    base_url: str  # the default base URL, or a template with {resource} / {region}
    auth_style: str
    output_limit_field: str = P.OutputLimitField.MAX_TOKENS
    reports_stream_usage: bool = True
    url_style: str = P.UrlStyle.STANDARD
    api_version: str = ""
    tokenizer: str = ""
    tokenizer_path: str = ""  # relative to the server's root (the base URL without /v1)
    request_id_header: str = ""  # only where the provider documents accepting one
    forward_headers: tuple[str, ...] = ()
    extra_headers: tuple[tuple[str, str], ...] = ()
    api_key_env: str = ""  # the variable the provider's own tools read
    models_path: str = "/models"  # its model list, relative to the base URL ("" : none)
    docs: str = ""
    quirks: tuple[str, ...] = field(default_factory=tuple)

    @property
    def needs(self) -> tuple[str, ...]:
        """The placeholders its base URL template asks for (``resource``, ``region``)."""
        return tuple(
            name for _, name, _, _ in string.Formatter().parse(self.base_url) if name is not None
        )

    def url(self, **values: str) -> str:
        missing = [n for n in self.needs if not values.get(n)]
        if missing:
            raise ValueError(f"the {self.key} preset needs: {', '.join(missing)}")
        for name in self.needs:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", values[name]):
                raise ValueError(f"{name} must be letters, digits and dashes")
        return self.base_url.format(**{n: values[n] for n in self.needs})

    def fields(self, *, base_url: str = "", **values: str) -> dict[str, Any]:
        """The Provider fields this preset sets, for ``base_url`` (default: its own URL, its
        template filled from ``values``)."""
        url = (base_url or self.url(**values)).rstrip("/")
        region = values.get("region", "")
        if not region and self.protocol == P.Protocol.BEDROCK:
            found = re.search(r"\.([a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com", url)
            region = found.group(1) if found else ""
        root = re.sub(r"/v1/?$", "", url)
        return {
            "preset": self.key,
            "protocol": self.protocol,
            "base_url": url,
            "auth_style": self.auth_style,
            "url_style": self.url_style,
            "api_version": self.api_version,
            "region": region,
            "output_limit_field": self.output_limit_field,
            "reports_stream_usage": self.reports_stream_usage,
            "tokenizer": self.tokenizer,
            "tokenizer_url": f"{root}{self.tokenizer_path}" if self.tokenizer_path else "",
            "request_id_header": self.request_id_header,
            "forward_headers": list(self.forward_headers),
            "extra_headers": dict(self.extra_headers),
        }


MAX_TOKENS = P.OutputLimitField.MAX_TOKENS
MAX_COMPLETION_TOKENS = P.OutputLimitField.MAX_COMPLETION_TOKENS
A = P.AuthStyle

PRESETS: dict[str, Preset] = {
    p.key: p
    for p in (
        Preset(
            key="openai",
            name="OpenAI",
            protocol=P.Protocol.OPENAI,
            base_url="https://api.openai.com/v1",
            auth_style=A.BEARER,
            # Reasoning models refuse max_tokens on Chat Completions; every model takes this.
            output_limit_field=MAX_COMPLETION_TOKENS,
            request_id_header="x-client-request-id",
            api_key_env="OPENAI_API_KEY",
            docs="https://platform.openai.com/docs/api-reference/chat",
            quirks=(
                "max_tokens is deprecated on Chat Completions and refused by reasoning models: "
                "the limit goes in max_completion_tokens.",
                "Accepts the caller's own id in X-Client-Request-Id (ASCII, up to 512 "
                "characters) and answers with its own x-request-id.",
            ),
        ),
        Preset(
            key="anthropic",
            name="Anthropic",
            protocol=P.Protocol.ANTHROPIC,
            base_url="https://api.anthropic.com",
            auth_style=A.X_API_KEY,
            tokenizer=P.Tokenizer.ANTHROPIC,
            api_key_env="ANTHROPIC_API_KEY",
            models_path="/v1/models",
            docs="https://docs.anthropic.com/en/api/messages",
            quirks=(
                "Needs the anthropic-version header (the gateway sends 2023-06-01 unless the "
                "caller sent one); max_tokens is required.",
                "Takes no request id from the caller; answers with its own request-id header.",
            ),
        ),
        Preset(
            key="azure",
            name="Azure OpenAI",
            protocol=P.Protocol.OPENAI,
            base_url="https://{resource}.openai.azure.com",
            auth_style=A.API_KEY,
            url_style=P.UrlStyle.AZURE,
            api_version="2024-10-21",
            output_limit_field=MAX_COMPLETION_TOKENS,
            api_key_env="AZURE_OPENAI_API_KEY",
            models_path="",
            docs="https://learn.microsoft.com/azure/ai-services/openai/reference",
            quirks=(
                "A route's upstream model is the deployment name: requests go to "
                "{base}/openai/deployments/{deployment}/chat/completions?api-version=...",
                "The key goes in the api-key header, not Authorization.",
                "2024-10-21 is the latest GA data-plane inference api-version; preview "
                "versions carry newer features.",
                "Deployments are not listed by the inference API: importmodels cannot read "
                "them; add routes by hand.",
            ),
        ),
        Preset(
            key="gemini",
            name="Google Gemini (OpenAI-compatible endpoint)",
            protocol=P.Protocol.OPENAI,
            base_url="https://generativelanguage.googleapis.com/v1beta/openai",
            auth_style=A.BEARER,
            api_key_env="GEMINI_API_KEY",
            docs="https://ai.google.dev/gemini-api/docs/openai",
            quirks=(
                "The Gemini API key goes in Authorization: Bearer on this endpoint.",
                "Model ids from GET /models come as 'models/gemini-...'; importmodels strips "
                "the 'models/' prefix.",
            ),
        ),
        Preset(
            key="bedrock",
            name="AWS Bedrock (Converse API)",
            protocol=P.Protocol.BEDROCK,
            base_url="https://bedrock-runtime.{region}.amazonaws.com",
            auth_style=A.SIGV4,
            api_key_env="",
            models_path="",  # ListFoundationModels is on the control plane (bedrock.{region})
            docs="https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html",
            quirks=(
                "POST /model/{modelId}/converse and /converse-stream (AWS event-stream "
                "framing), signed with SigV4 for the service 'bedrock'.",
                "Credentials: the provider's key as ACCESS_KEY_ID:SECRET_ACCESS_KEY"
                "[:SESSION_TOKEN], else botocore's standard chain (AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, ~/.aws, instance role). Auth style "
                "'bearer' sends a Bedrock API key instead of signing.",
                "The model id is the Bedrock model or inference-profile id (e.g. "
                "us.anthropic.claude-...-v1:0); it is URL-encoded in the path.",
                "Usage arrives in the stream's last event (metadata), after messageStop.",
            ),
        ),
        Preset(
            key="mistral",
            name="Mistral",
            protocol=P.Protocol.OPENAI,
            base_url="https://api.mistral.ai/v1",
            auth_style=A.BEARER,
            api_key_env="MISTRAL_API_KEY",
            docs="https://docs.mistral.ai/api/",
            quirks=("Takes max_tokens; streams end with a chunk that carries usage.",),
        ),
        Preset(
            key="groq",
            name="Groq",
            protocol=P.Protocol.OPENAI,
            base_url="https://api.groq.com/openai/v1",
            auth_style=A.BEARER,
            output_limit_field=MAX_COMPLETION_TOKENS,
            api_key_env="GROQ_API_KEY",
            docs="https://console.groq.com/docs/api-reference",
            quirks=(
                "max_completion_tokens is the documented field (max_tokens is deprecated).",
                "Streams also carry usage under x_groq.usage in the last chunk.",
            ),
        ),
        Preset(
            key="together",
            name="Together AI",
            protocol=P.Protocol.OPENAI,
            base_url="https://api.together.xyz/v1",
            auth_style=A.BEARER,
            api_key_env="TOGETHER_API_KEY",
            docs="https://docs.together.ai/reference/chat-completions-1",
            quirks=("Takes max_tokens; the last stream chunk carries usage.",),
        ),
        Preset(
            key="fireworks",
            name="Fireworks AI",
            protocol=P.Protocol.OPENAI,
            base_url="https://api.fireworks.ai/inference/v1",
            auth_style=A.BEARER,
            api_key_env="FIREWORKS_API_KEY",
            docs="https://docs.fireworks.ai/api-reference/post-chatcompletions",
            quirks=(
                "Model ids are paths such as accounts/fireworks/models/<name>.",
                "Takes max_tokens; the last stream chunk carries usage.",
            ),
        ),
        Preset(
            key="deepseek",
            name="DeepSeek",
            protocol=P.Protocol.OPENAI,
            base_url="https://api.deepseek.com",
            auth_style=A.BEARER,
            api_key_env="DEEPSEEK_API_KEY",
            docs="https://api-docs.deepseek.com/api/create-chat-completion",
            quirks=(
                "The base URL has no /v1 (https://api.deepseek.com/v1 also works).",
                "Takes max_tokens and stream_options.include_usage; deepseek-reasoner streams "
                "reasoning_content.",
            ),
        ),
        Preset(
            key="openrouter",
            name="OpenRouter",
            protocol=P.Protocol.OPENAI,
            base_url="https://openrouter.ai/api/v1",
            auth_style=A.BEARER,
            api_key_env="OPENROUTER_API_KEY",
            docs="https://openrouter.ai/docs/api-reference/overview",
            quirks=(
                "Model ids are vendor/model (e.g. anthropic/claude-sonnet-4).",
                "Streams may carry SSE comment lines (': OPENROUTER PROCESSING') as keep-alives.",
                "Optional attribution headers HTTP-Referer and X-Title can be set as fixed "
                "headers.",
            ),
        ),
        Preset(
            key="vllm",
            name="vLLM (self-hosted)",
            protocol=P.Protocol.OPENAI,
            base_url="http://localhost:8000/v1",
            auth_style=A.BEARER,
            tokenizer=P.Tokenizer.VLLM,
            tokenizer_path="/tokenize",
            docs="https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html",
            quirks=(
                "The key is only checked when the server runs with --api-key.",
                "POST /tokenize (at the server root, not under /v1) counts with the served "
                "model's own tokenizer.",
            ),
        ),
        Preset(
            key="ollama",
            name="Ollama (self-hosted)",
            protocol=P.Protocol.OPENAI,
            base_url="http://localhost:11434/v1",
            auth_style=A.NONE,
            models_path="/api/tags",
            docs="https://docs.ollama.com/api/openai-compatibility",
            quirks=(
                "No credentials locally (SDKs need a non-empty key, Ollama ignores it).",
                "Supports stream_options.include_usage and max_tokens on /v1/chat/completions.",
                "importmodels reads its native list, GET /api/tags (the server root).",
            ),
        ),
        Preset(
            key="llama.cpp",
            name="llama.cpp server (self-hosted)",
            protocol=P.Protocol.OPENAI,
            base_url="http://localhost:8080/v1",
            auth_style=A.BEARER,
            reports_stream_usage=False,
            tokenizer=P.Tokenizer.LLAMA_CPP,
            tokenizer_path="/tokenize",
            docs="https://github.com/ggml-org/llama.cpp/tree/master/tools/server",
            quirks=(
                "The key is only checked when llama-server runs with --api-key.",
                'POST /tokenize {"content": ...} (server root) returns the model\'s tokens.',
                "Streams are counted with that tokenizer rather than trusting "
                "include_usage, which older builds ignore.",
            ),
        ),
        Preset(
            key="llama-cpp-python",
            name="llama-cpp-python server (self-hosted)",
            protocol=P.Protocol.OPENAI,
            base_url="http://localhost:8000/v1",
            auth_style=A.BEARER,
            reports_stream_usage=False,
            tokenizer=P.Tokenizer.LLAMA_CPP_PYTHON,
            tokenizer_path="/extras/tokenize/count",
            docs="https://llama-cpp-python.readthedocs.io/en/latest/server/",
            quirks=(
                "Rejects any x-request-id that is not a UUID4 (HTTP 400): no request id is sent.",
                "Ignores stream_options.include_usage: streams are counted with its own "
                "POST /extras/tokenize/count.",
                "Ignores max_completion_tokens: the limit goes in max_tokens.",
            ),
        ),
        Preset(
            key="lmstudio",
            name="LM Studio (self-hosted)",
            protocol=P.Protocol.OPENAI,
            base_url="http://localhost:1234/v1",
            auth_style=A.NONE,
            reports_stream_usage=False,
            docs="https://lmstudio.ai/docs/app/api/endpoints/openai",
            quirks=(
                "No credentials; takes max_tokens.",
                "Ignores stream_options.include_usage (lmstudio-bug-tracker#713): streams carry "
                "no usage and are counted by the gateway.",
            ),
        ),
        Preset(
            key="tgi",
            name="Hugging Face TGI (self-hosted)",
            protocol=P.Protocol.OPENAI,
            base_url="http://localhost:8080/v1",
            auth_style=A.BEARER,
            reports_stream_usage=False,
            docs="https://huggingface.co/docs/text-generation-inference/messages_api",
            quirks=(
                "The Messages API serves one model: the model field is not used to pick one "
                "('tgi' is conventional).",
                "Bearer auth only matters on Inference Endpoints (a Hugging Face token).",
                "Streams carry no usage: stream_options is not supported "
                "(text-generation-inference#2531); they are counted by the gateway.",
            ),
        ),
        Preset(
            key="simulator",
            name="Token Factory simulator",
            protocol=P.Protocol.OPENAI,
            base_url="http://127.0.0.1:9100/v1",
            auth_style=A.BEARER,
            request_id_header="x-request-id",
            forward_headers=("x-sim-options",),
            docs="gateway/simulator/",
            quirks=(
                "Takes our x-request-id (its stats are kept per id) and the x-sim-options "
                "test knobs.",
            ),
        ),
    )
}


def get(key: str) -> Preset:
    try:
        return PRESETS[key]
    except KeyError:
        raise ValueError(f"unknown preset {key!r}; one of: {', '.join(sorted(PRESETS))}") from None


def choices() -> list[tuple[str, str]]:
    return [(p.key, p.name) for p in PRESETS.values()]


def apply(provider: Provider, preset: Preset, *, base_url: str = "", **values: str) -> None:
    """Set ``provider``'s fields from ``preset`` (not saved)."""
    for name, value in preset.fields(base_url=base_url, **values).items():
        setattr(provider, name, value)
    if preset.api_key_env and not provider.api_key_env:
        provider.api_key_env = preset.api_key_env
