"""What the simulator has served: requests and the tokens it actually sent, in total, per model
and per incoming `x-request-id`. One event loop owns it, so no locks."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

# Old request ids are forgotten past this many, so a long-running simulator stays small.
MAX_TRACKED_REQUESTS = 200_000


@dataclass(slots=True)
class Tally:
    requests: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = Tally()
        self.by_model: dict[str, Tally] = {}
        # (input, output) tuples: a tuple of ints drops out of the garbage collector's tracking,
        # where 200,000 two-item lists made each full collection stall the loop for tens of ms.
        self.by_request: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.ordinals: dict[str, int] = {}
        # The headers of the latest model request, so tests can see what a gateway forwarded.
        self.last_headers: dict[str, str] = {}
        # The connections model requests came on (peer addresses), so tests can see pooling.
        self.connections: set[str] = set()
        # Signed thinking blocks clients sent back (Anthropic messages), each one verified.
        self.signed_thinking = 0

    def begin(self, *, model: str, fault_key: str, client: str = "") -> int:
        """Count a request; returns its 1-based ordinal among requests with the same fault key."""
        if client and len(self.connections) < MAX_TRACKED_REQUESTS:
            self.connections.add(client)
        self.total.requests += 1
        self._model(model).requests += 1
        self.ordinals[fault_key] = self.ordinals.get(fault_key, 0) + 1
        return self.ordinals[fault_key]

    def fail(self, *, model: str) -> None:
        self.total.failures += 1
        self._model(model).failures += 1

    def served(
        self, *, model: str, request_id: str | None, input_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        for tally in (self.total, self._model(model)):
            tally.input_tokens += input_tokens
            tally.output_tokens += output_tokens
        if request_id is None:
            return
        before = self.by_request.get(request_id, (0, 0))
        self.by_request[request_id] = (before[0] + input_tokens, before[1] + output_tokens)
        if len(self.by_request) > MAX_TRACKED_REQUESTS:
            self.by_request.popitem(last=False)

    def snapshot(self) -> dict[str, Any]:
        return {
            **asdict(self.total),
            "last_headers": self.last_headers,
            "connections": len(self.connections),
            "signed_thinking": self.signed_thinking,
            "by_model": {name: asdict(tally) for name, tally in self.by_model.items()},
            "by_request": {
                rid: {"input_tokens": i, "output_tokens": o}
                for rid, (i, o) in self.by_request.items()
            },
        }

    def _model(self, model: str) -> Tally:
        return self.by_model.setdefault(model, Tally())
