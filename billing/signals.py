"""What billing tells the rest of the project: that an account's spendable balance moved."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once a top-up, refund or adjustment is committed, with ``account_id`` and
# ``amount_micros`` (either sign). Whoever keeps a live copy of balances (the gateway's limiter)
# moves it too. Usage charges are not sent: admission already took them from the live copy.
balance_moved = Signal()
