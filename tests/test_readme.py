"""The README's own-model example runs as written (a user's nn.Module through the public API)."""

import re
from pathlib import Path


def test_readme_own_module_example_runs(capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"<!-- example: own-module.*?-->\s*```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    edge, result = namespace["edge"], namespace["result"]
    assert edge.reached and edge.sharpness >= 2 / 0.15
    assert "edge at step" in out
    assert len(result.frames()["gd"]) == 40 or result.stop_reason.startswith("lambda2")
