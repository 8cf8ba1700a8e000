"""The README's first command: `pampa demo` starts a fleet, deploys the demo app, prints working URLs."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request

import pytest

pytestmark = pytest.mark.fleet

#: Not the subnet of the README's `pampa demo` (127.0.0): an operator's running demo does not break the test.
SUBNET = os.environ.get("PAMPA_DEMO_SUBNET", "127.0.250")


def test_demo_deploys_and_comes_down(tmp_path):
    folder = tmp_path / "demo"
    env = {**os.environ, "CI": "1"}
    try:
        up = subprocess.run([sys.executable, "-m", "pampa_deployer", "demo", "--dir", str(folder),
                             "--subnet", SUBNET], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr
        revision = subprocess.run(["git", "-C", str(folder / "origin.git"), "rev-parse", "main"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        urls = re.findall(r"^(kepler-1|euler-1): (http://\S+) -> pampa-demo revision=(\w+)", up.stdout, re.M)
        assert {name for name, _, _ in urls} == {"kepler-1", "euler-1"}, up.stdout[-2000:]
        for _, url, served in urls:
            assert served == revision
            assert f"revision={revision}" in urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310
        assert "deploy of demo: 4 ok" in up.stdout
        assert up.stdout.rstrip().endswith(f"stop it: pampa demo down --dir {folder}")  # stops this demo
        # README: `pampa logs STAGE --roles ...`: the demo's processes log to ~/log (logs.files), no journald.
        logs = subprocess.run([sys.executable, "-m", "pampa_deployer", "--stages", str(folder / "stages"), "logs",
                               "demo", "--roles", "kepler", "-n", "50"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert logs.returncode == 0, logs.stdout + logs.stderr
        assert re.search(r"^kepler-1 \| .*Listening on http://", logs.stdout, re.M), logs.stdout
        # Issue 22: the workers' logs were empty, so `pampa logs demo --roles newton` printed nothing.
        workers = subprocess.run([sys.executable, "-m", "pampa_deployer", "--stages", str(folder / "stages"), "logs",
                                  "demo", "--roles", "newton", "-n", "5"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert workers.returncode == 0, workers.stdout + workers.stderr
        assert re.search(rf"^newton-1 \| \S+ worker: started, pid \d+, revision {revision[:12]}$", workers.stdout,
                         re.M), workers.stdout
    finally:
        down = subprocess.run([sys.executable, "-m", "pampa_deployer", "demo", "down", "--dir", str(folder)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "stopped" in down.stdout
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{SUBNET}.11:9292/", timeout=2)
