"""`pip install ./bindings/python` works offline with the venv's pip (no build requirements from the index), and
the installed package finds the library bundled next to it, without the source tree or SLUICE_LIB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, STORIES


def test_pip_install_and_use(tmp_path: Path) -> None:
    lib = os.environ.get("SLUICE_LIB")
    if not lib:
        pytest.skip("SLUICE_LIB not set (run through ctest)")
    target = tmp_path / "site"
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--target",
                        str(target), str(REPO / "bindings" / "python")], capture_output=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert (target / "sluice" / "libsluice.so").is_file()
    assert (target / "sluice" / "py.typed").is_file()

    code = ("import sluice\n"
            "llm = sluice.LLM(%r, n_threads=1)\n"
            "print(sluice.library_path())\n"
            "print(llm.generate('Once upon a time', sluice.SamplingParams(temperature=0, max_tokens=8))"
            "[0].outputs[0].text)\n" % STORIES)
    run_env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_LIB", "PYTHONPATH")}
    run_env["PYTHONPATH"] = str(target)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=run_env, cwd=str(tmp_path),
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    assert lines[0] == str(target / "sluice" / "libsluice.so")
    assert lines[1].startswith(", there was")
