"""BatchNorm, InstanceNorm and GroupNorm statistics are sums around the statistic's first value. A
block (channels first: of a plane; channels last: of rows) takes one pass when that value is near the
block's mean and the corrected two-pass route otherwise. Every route must give the float64 variance of
the same float32 data to a few ulps, whatever the first value is, in statistics of one block and of
several."""

import numpy as np
import pytest
from normkit import functional as F

EPS = 1e-12  # keeps eps from hiding variance errors


def _var_from_rstd(rstd):
    return 1.0 / rstd.astype(np.float64) ** 2 - EPS


def _data(shape, first, seed, layout):
    """float32 values 1e4 + 0.1 N(0, 1), the first value of every (n, c) plane `first` standard
    deviations away; planes of more than 4096 values also get that of their second block. Stored
    channels first or channels last (the same values)."""
    rng = np.random.default_rng(seed)
    x = (1e4 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    planes = x.reshape(shape[0], shape[1], -1)
    planes[:, :, 0] = np.float32(1e4 + 0.1 * first)
    if planes.shape[2] > 4096:
        planes[:, :, 4096] = np.float32(1e4 - 0.1 * first)
    if layout == "cl":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return x


def _check(var, mean, x64_groups):
    want_var = x64_groups.var(axis=-1)
    np.testing.assert_allclose(var, want_var, rtol=2e-5)
    want_mean = x64_groups.mean(axis=-1)
    bound = 2 * np.spacing(np.abs(want_mean).astype(np.float32)) + 1e-6 * np.sqrt(want_var)
    assert np.all(np.abs(mean - want_mean) <= bound), (mean, want_mean, bound)


FIRSTS = [0.0, 1.9, 3.0, 1e3, -1e6]  # the first value, in standard deviations from the mean
SPATIAL = [(5, 7), (64, 64), (70, 71)]  # channels first: one short block, exactly one, two per plane
LAYOUTS = ["cf", "cl"]  # channels last: blocks of 16384 // C rows, so several per statistic here


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("first", FIRSTS)
@pytest.mark.parametrize("hw", SPATIAL)
def test_batch_norm_variance_accurate_whatever_the_first_value(first, hw, layout):
    x = _data((3, 2, *hw), first, seed=hw[0], layout=layout)
    _, mean, rstd = F.batch_norm_forward(x, None, None, training=True, eps=EPS)
    groups = x.astype(np.float64).transpose(1, 0, 2, 3).reshape(2, -1)
    _check(_var_from_rstd(rstd), mean, groups)


# Channels-first BatchNorm with planes under 1024 values takes moments per block of a channel's
# planes (kStatBlock = 4096 values: 256 planes of 4x4, 83 of 7x7): several blocks here, the last short.
@pytest.mark.parametrize("first", FIRSTS)
@pytest.mark.parametrize("shape", [(600, 2, 4, 4), (130, 2, 7, 7), (9, 2, 31, 32)])
def test_batch_norm_short_planes_accurate_whatever_the_first_value(first, shape):
    x = _data(shape, first, seed=shape[0], layout="cf")
    _, mean, rstd = F.batch_norm_forward(x, None, None, training=True, eps=EPS)
    groups = x.astype(np.float64).transpose(1, 0, 2, 3).reshape(2, -1)
    _check(_var_from_rstd(rstd), mean, groups)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("first", FIRSTS)
@pytest.mark.parametrize("hw", SPATIAL)
def test_instance_norm_variance_accurate_whatever_the_first_value(first, hw, layout):
    x = _data((2, 3, *hw), first, seed=hw[1], layout=layout)
    _, mean, rstd = F.instance_norm_forward(x, eps=EPS)
    groups = x.astype(np.float64).reshape(2, 3, -1)
    _check(_var_from_rstd(rstd).reshape(2, 3), mean.reshape(2, 3), groups)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("first", FIRSTS)
@pytest.mark.parametrize("hw", SPATIAL)
def test_group_norm_variance_accurate_whatever_the_first_value(first, hw, layout):
    x = _data((2, 4, *hw), first, seed=hw[0] + hw[1], layout=layout)
    _, mean, rstd = F.group_norm_forward(x, 2, eps=EPS)
    groups = x.astype(np.float64).reshape(2, 2, -1)
    _check(_var_from_rstd(rstd).reshape(2, 2), mean.reshape(2, 2), groups)


def test_group_norm_channels_last_block_mixes_one_and_two_pass_groups():
    """In one block of channels-last rows, group 0's shift is far from its values (two passes) while
    group 1's is not (one pass): each group keeps its own route's accurate moments."""
    x = _data((2, 4, 64, 64), 0.0, seed=11, layout="cf")
    x[:, 0:2, 0, 0] = np.float32(1e4 + 0.1 * 1e3)  # group 0's first values: 1000 deviations off
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    _, mean, rstd = F.group_norm_forward(x, 2, eps=EPS)
    groups = x.astype(np.float64).reshape(2, 2, -1)
    _check(_var_from_rstd(rstd).reshape(2, 2), mean.reshape(2, 2), groups)
