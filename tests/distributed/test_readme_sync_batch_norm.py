"""The README's SyncBatchNorm example runs as written, at any world size."""

import pathlib
import re

import pytest
from world import HAVE_MPI


@pytest.mark.skipif(not HAVE_MPI, reason="the example uses normkit's MPI module")
def test_readme_sync_batch_norm_example_runs():
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## SyncBatchNorm\n.*?```python\n(.*?)```", readme, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert type(namespace["model"][1]).__name__ == "BatchNormXd"
    assert namespace["dx"].shape == (4, 8, 5)
