"""What accounts tells the rest of the project: that what some keys may do has changed."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once the change is committed, with ``key_hashes`` (a list of ApiKey.key_hash): a key was
# issued, rotated, revoked or edited, or its account or plan changed. Processes that cache what
# a key may do (the gateway) forget those keys. Sent only by accounts.keys.announce_change.
key_changed = Signal()
