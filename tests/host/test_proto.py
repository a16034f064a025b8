"""The checked-in generated modules match proto/ (what `make proto` would write)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("hostplug_pb2.py", "hostplug_pb2.pyi", "hostplug_pb2_grpc.py")


def test_generated_host_api_is_current(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            "proto/host_side/api/hostplug.proto",
        ],
        cwd=REPO,
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "host_side/api" / name).read_text()
        assert fresh == (REPO / "host_side/api" / name).read_text(), f"{name} is stale: run `make proto`"
