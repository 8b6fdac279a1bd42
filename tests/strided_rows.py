"""Non-contiguous inputs for the row normalizations' tests (LayerNorm, RMSNorm): random strided NumPy
views for the property tests (any memory order, any steps including negative ones, 1 or 2 normalized
trailing dims) and a fixed list of torch views of every kind."""

import numpy as np
import reference as R
from hypothesis import strategies as st


@st.composite
def strided_layouts(draw):
    """shape, ns (the normalized trailing dims), steps, perm, dtype and seed of a strided view."""
    k = draw(st.integers(1, 2))
    # zero-size batches have their own tests (test_zero_size_leading_dims)
    lead = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    norm = draw(st.lists(st.integers(1, 12), min_size=k, max_size=k))
    shape = tuple(lead + norm)
    steps = tuple(draw(st.lists(st.sampled_from([1, 2, 3, -1, -2]), min_size=len(shape), max_size=len(shape))))
    perm = tuple(draw(st.permutations(range(len(shape)))))
    return dict(
        shape=shape,
        ns=tuple(norm),
        steps=steps,
        perm=perm,
        dtype=draw(st.sampled_from(["float32", "float64"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def strided_view(shape, steps, perm, dtype, seed):
    """A view of `shape` whose memory order is `perm` and whose dims are sliced with `steps`."""
    t_shape = [shape[p] for p in perm]
    t_steps = [steps[p] for p in perm]
    base = R.make_numpy([n * abs(s) for n, s in zip(t_shape, t_steps)], dtype, seed)
    v = base[tuple(slice(None, None, s) for s in t_steps)].transpose(np.argsort(perm))
    assert v.shape == tuple(shape), (v.shape, shape)
    return v


def x_and_dy(case):
    """x and dy as two differently strided views of the case's shape."""
    shape, dtype = case["shape"], case["dtype"]
    x = strided_view(shape, case["steps"], case["perm"], dtype, case["seed"])
    dy = strided_view(shape, case["steps"][::-1], case["perm"][::-1], dtype, case["seed"] + 1)
    return x, dy


def torch_row_views(dtype):
    """(name, view, normalized_shape): torch views of every kind a row normalization must take as they
    are (transposed, narrowed, stepped, broadcast across and inside rows, permuted)."""
    mk = lambda shape, seed: R.make_torch(shape, dtype, seed)  # noqa: E731
    return [
        ("t()", mk((24, 5), 71).t(), (24,)),
        ("narrow-last", mk((6, 50), 72).narrow(1, 3, 40), (40,)),
        ("narrow-rows", mk((9, 32), 73).narrow(0, 2, 5), (32,)),
        ("step-slice", mk((6, 60), 74)[:, ::3], (20,)),
        ("expand-rows", mk((1, 48), 75).expand(6, 48), (48,)),
        ("expand-inside-row", mk((4, 1, 16), 76).expand(4, 3, 16), (3, 16)),
        ("permute", mk((5, 3, 7), 77).permute(1, 2, 0), (7, 5)),
    ]
