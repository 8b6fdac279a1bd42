"""The README's usage example runs as written."""

import pathlib
import re


def test_readme_usage_example_runs():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## Usage\n\n```python\n(.*?)```", readme, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert [r[1] for r in namespace["report"]] == ["BatchNorm2d", "GroupNorm"]
    assert namespace["dxn"].shape == namespace["xn"].shape
