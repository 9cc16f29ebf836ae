"""The one error translation raises: client input that the other protocol cannot express."""

from __future__ import annotations


class TranslationError(Exception):
    """A request the target protocol cannot carry; ``message`` says what the client should fix and
    ``param`` names the offending field (``messages[2].content[0]``) when there is one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
