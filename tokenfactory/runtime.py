"""Process-wide tuning shared by the long-running servers (the gateway and the simulator)."""

from __future__ import annotations

import gc


def settle_collector() -> None:
    """Everything loaded so far lives as long as the process: move it out of the collector's way,
    and collect the young generation less often. With the defaults, a full collection every
    couple of seconds paused the event loop for about 100 ms and delayed every request in flight
    (p99 at 64 clients: 310 ms against a 200 ms upstream; 235 ms frozen). Call it once, after
    start-up has imported and built what the server keeps."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
