"""What the SyncBatchNorm layers (NumPy and torch) share: the communicator they resolve once, and the
identity sent with each collective when mismatch detection is on."""

from __future__ import annotations

import itertools
import os

_layer_ids = itertools.count(1)


def check_enabled(flag) -> bool:
    """The constructor's ``sync_check``, or NORMKIT_SYNC_CHECK=1 when it is None."""
    return bool(flag) if flag is not None else os.environ.get("NORMKIT_SYNC_CHECK", "0") == "1"


class SyncIdentity:
    """A layer's id (its creation order in the process: the same on every process that builds the same
    model) and its call counter, sent as ``check=(layer_id, call)`` when checking is on."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.layer_id = next(_layer_ids)
        self.calls = 0

    def next_call(self):
        """The check for a new forward call (None when off)."""
        self.calls += 1
        return (self.layer_id, self.calls) if self.enabled else None
