"""The README's example runs as written (on the default model; skipped when it was not fetched)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sluice import default_model_path

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(not os.path.isfile(default_model_path()), reason="default model not fetched")
def test_readme_example_runs(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code, "README.md has no python example"
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "'The capital of France is' ->" in out and "576 dimensions" in out
