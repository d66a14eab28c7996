"""The scripts in examples/python run against corral dev and print what they promise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "python"

EXPECTED = {
    "quickstart.py": ["run: ['Linux', 'sandbox'] exit 0", "run_code: 10", "read_file: result", "destroyed: stopped"],
    "fanout.py": ["20 sandboxes evaluated in", "sum of results 1330"],
    "streaming.py": ["[stdout] step 0", "[stdout] step 4", "done: exit 0"],
    "from_local.py": ["uploaded: ['.gitignore', 'calc.py', 'test_calc.py']", "tests ok (exit 0)"],
    "codebase_agent.py": [
        "report: n=5 sum=189 max=92",
        "cat .env: hidden",
        "write to src/: denied",
        "diff: A output/report.txt (19 bytes)",
    ],
    "sync_script.py": ["hello from 3.", "streamed: 2", "status after exit: stopped"],
    "processes.py": [
        "server 1: listening on 8000",
        "fetched: 200",
        "server 1 exited with exit code 0",
        "session: /workspace/app stage=test",
    ],
    "jobs.py": [
        "execute_code: completed 42",
        "wait_for_job: completed background done",
        "cancel_job: cancelled",
        "run_batch: 12 items, sum of squares 506",
    ],
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script: str, endpoint: str) -> None:
    env = {**os.environ, "CORRAL_ENDPOINT": endpoint}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    for line in EXPECTED[script]:
        assert line in proc.stdout, f"{line!r} not in:\n{proc.stdout}"
