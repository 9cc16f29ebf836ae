"""How one protocol becomes the other: OpenAI Chat Completions <-> Anthropic Messages requests,
responses and streams, as pure functions and small stream state machines (no I/O here)."""
