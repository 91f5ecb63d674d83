"""`streamlit run app/server.py` (what `make run` starts) comes up and serves the app."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.network import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_streamlit_server_comes_up_healthy(tmp_path):
    port = free_port()
    env = os.environ | {"ALIGNLAB_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, cwd=ROOT, check=True)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/server.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                    assert reply.read() == b"ok"
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not answer /_stcore/health within 60 s")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
            assert b"<title>" in reply.read()
    finally:
        server.terminate()
        server.wait(timeout=20)
