"""The bundled upstream simulator: a plain ASGI server speaking the OpenAI and the Anthropic
protocols, deterministic, with latency and fault knobs chosen per request."""
