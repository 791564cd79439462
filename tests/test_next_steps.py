"""Commands that p2p prints for the user to run next run as printed: called the way the user called p2p."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

from p2p.runtime.cli_options import runnable

SCRIPTS = Path(sys.executable).parent


def test_a_suggestion_uses_the_prefix_the_user_typed():
    assert runnable("p2p-export", ".venv/bin/p2p-train") == ".venv/bin/p2p-export"
    assert runnable("p2p-export", "/opt/p2p env/bin/p2p-train") == "'/opt/p2p env/bin/p2p-export'"
    assert runnable("p2p-export", "p2p-train") == "p2p-export"  # found on PATH: say it the same way


@pytest.mark.slow
def test_the_next_steps_printed_after_training_run_as_printed(tmp_path):
    """The README's way: .venv/bin/p2p-train from the checkout, without activating the environment."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # no .venv/bin on PATH: a bare p2p-export would be "command not found"
    script = os.path.relpath(SCRIPTS / "p2p-train", tmp_path)
    done = subprocess.run([script, "--out", "run", "--iters", "2", *TINY], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    export = re.search(r"^\s+export\s+(\S.*?)\s{2,}\(writes", done.stderr, re.M)
    assert export and export.group(1).startswith(os.path.dirname(script)), done.stderr
    ran = subprocess.run(export.group(1), shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (tmp_path / "run" / "model.onnx").is_file()
    assert "wrote" in ran.stdout  # the result on stdout, the progress on stderr
