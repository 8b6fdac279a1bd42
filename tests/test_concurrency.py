"""Calls from several Python threads at once (the GIL is released during compute) share the thread
pool; each must get exactly the result it gets alone."""

import threading

import numpy as np
from normkit import functional as F


def test_concurrent_calls_match_serial_results():
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((64 + 7 * i, 1000)).astype(np.float32) for i in range(6)]
    images = [rng.standard_normal((4, 8, 17, 9)).astype(np.float32) for _ in range(6)]
    serial = [(F.layer_norm(x, 1000), F.group_norm(im, 4)) for x, im in zip(inputs, images)]
    results = [None] * len(inputs)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got = (F.layer_norm(inputs[i], 1000), F.group_norm(images[i], 4))
                for a, b in zip(got, serial[i]):
                    if not np.array_equal(a, b):
                        raise AssertionError(f"thread {i}: result differs from the serial one")
            results[i] = True
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(results)
