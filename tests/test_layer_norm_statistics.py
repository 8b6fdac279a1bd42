"""LayerNorm statistics on the CPU take one pass around the block's first value when that value is
near the mean, and two passes otherwise. Both routes must give the float64 variance of the same
float32 data to a few ulps, whatever the first value is."""

import numpy as np
import pytest
from normkit import functional as F


def _var_from_rstd(rstd, eps):
    return 1.0 / rstd.astype(np.float64) ** 2 - eps


@pytest.mark.parametrize("n", [7, 1000, 4096, 5000, 12289])  # one block, exactly one, several
@pytest.mark.parametrize("first", [0.0, 1.9, 3.0, 1e3, -1e6])  # first value, in standard deviations
def test_variance_accurate_whatever_the_first_value(n, first):
    rng = np.random.default_rng(n)
    x = (1e4 + 0.1 * rng.standard_normal((6, n))).astype(np.float32)
    x[:, 0] = np.float32(1e4 + 0.1 * first)
    if n > 4096:
        x[:, 4096] = np.float32(1e4 - 0.1 * first)  # the second block's first value too
    eps = 1e-12  # keep eps from hiding variance errors
    _, mean, rstd = F.layer_norm_forward(x, n, eps=eps)
    x64 = x.astype(np.float64)
    want_var = x64.var(axis=1)
    # float32 accumulation of well-conditioned sums: a few float32 ulps of the variance
    np.testing.assert_allclose(_var_from_rstd(rstd, eps), want_var, rtol=2e-5)
    # The mean feeds (x - mean) * rstd: its error matters relative to the spread. Allow two float32
    # ulps of the mean itself plus 1e-6 standard deviations (a far first value costs a few ulps).
    want_mean = x64.mean(axis=1)
    bound = 2 * np.spacing(np.abs(want_mean).astype(np.float32)) + 1e-6 * np.sqrt(want_var)
    assert np.all(np.abs(mean - want_mean) <= bound), (mean, want_mean, bound)


def test_constant_rows_have_zero_variance():
    x = np.full((3, 100), 7.25, np.float32)
    y, mean, rstd = F.layer_norm_forward(x, 100, eps=1e-5)
    np.testing.assert_array_equal(mean, 7.25)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(np.float32(1e-5)), rtol=1e-7)
    np.testing.assert_array_equal(y, 0)
