"""The set-up both lab levels' fixtures run first: idempotent and quick once done, it makes a bare
`pytest -m lab` work without `make testbed-lab` / `make testbed-lab-d`."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO


def set_up_level(script: str, why_root: str) -> None:
    """Skips without root (saying `why_root`); fails with the script's output when `script` fails."""
    if os.geteuid() != 0:
        pytest.skip(f"this lab level needs root ({why_root})")
    done = subprocess.run(["bash", str(REPO / script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{script} failed:\n{done.stdout}{done.stderr}")
