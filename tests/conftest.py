"""Shared pytest configuration for the normkit LayerNorm / RMSNorm tests.

The helpers (references, tolerances, comparisons) live in tests/reference.py so that test modules can
import them by name; this file only holds configuration and fixtures.
"""

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Small, fast, reproducible property-based runs; NORMKIT_HYPOTHESIS_EXAMPLES=N gives a longer randomized
# search. No deadline (first calls may load the extension / warm caches).
_EXAMPLES = os.environ.get("NORMKIT_HYPOTHESIS_EXAMPLES")
settings.register_profile(
    "normkit",
    max_examples=int(_EXAMPLES or 40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=_EXAMPLES is None,
)
settings.load_profile("normkit")


@pytest.fixture(autouse=True)
def _restore_num_threads():
    """Every test leaves normkit's thread count as it found it."""
    import normkit

    before = normkit.get_num_threads()
    yield
    normkit.set_num_threads(before)
    assert normkit.get_num_threads() == before


@pytest.fixture(autouse=True)
def _torch_default_state():
    """Keep torch's global state (grad mode, thread count) identical across tests."""
    import torch

    grad = torch.is_grad_enabled()
    threads = torch.get_num_threads()
    yield
    torch.set_grad_enabled(grad)
    torch.set_num_threads(threads)
