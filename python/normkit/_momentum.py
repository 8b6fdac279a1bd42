"""The weight of the new batch in a running-statistics update, as torch's BatchNorm computes it."""


def batch_weight(momentum, num_batches_tracked, updating: bool) -> float:
    """``momentum``, or with ``momentum=None`` the cumulative average 1 / (batches so far + 1);
    0.0 when the running statistics are not being updated."""
    if momentum is not None:
        return float(momentum)
    return 1.0 / float(num_batches_tracked + 1) if updating else 0.0
