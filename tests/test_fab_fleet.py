"""``fab -H`` through the top-level fabfile.py, against the real fleet."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import head

pytestmark = pytest.mark.fleet
ROOT = Path(__file__).resolve().parent.parent


def fab(project, fleet, *args):
    exe = shutil.which("fab") or str(Path(sys.executable).parent / "fab")
    return subprocess.run([exe, "-r", str(ROOT), "-i", str(fleet.key), *args], cwd=project.root,
                          capture_output=True, text=True, timeout=120, env={**os.environ},
                          stdin=subprocess.DEVNULL)


def test_fab_runs_a_role_sequence_on_two_hosts(project, fleet):
    project.stage()
    new = fleet.commit("Deployed with fab")
    hosts = ",".join(f"root@{fleet.host(n).address}:2222" for n in ("newton-1", "newton-2"))

    result = fab(project, fleet, "-H", hosts, "deploy", "--stage", "test", "--stages", str(project.stages),
                 "--role", "newton")

    assert result.returncode == 0, result.stdout + result.stderr
    assert head(fleet, "newton-1") == head(fleet, "newton-2") == new
    assert "[newton-1] restart_workers" in result.stdout
    assert "DB_PASSWORD" not in result.stdout  # the secret file's content never shows


def test_fab_single_step_and_listing(project, fleet):
    project.stage()
    listing = fab(project, fleet, "--list")
    assert listing.returncode == 0
    for task in ("deploy", "git-fetch", "git-reset", "secrets", "migrate", "bundle", "restart-puma",
                 "restart-processes", "restart-workers", "report-version"):
        assert task in listing.stdout

    host = f"root@{fleet.host('kepler-1').address}:2222"
    result = fab(project, fleet, "-H", host, "report-version", "--stage", "test", "--stages", str(project.stages))
    assert result.returncode == 0, result.stderr
    assert head(fleet, "kepler-1") in result.stdout


def test_fab_refuses_unknown_host_keys(project, fleet, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    project.stage(ssh={"known_hosts": str(empty)})
    host = f"root@{fleet.host('kepler-1').address}:2222"
    result = fab(project, fleet, "-H", host, "report-version", "--stage", "test", "--stages", str(project.stages))
    assert result.returncode != 0
    assert "unknown host key" in result.stdout + result.stderr
    assert empty.read_text() == ""


def test_fab_host_named_as_in_the_stage_reaches_its_address_port_and_key(project, fleet):
    """``-H kepler-1 --roles kepler``: the stage's address, port 2222, user and key; no -i, no :port."""
    project.stage()
    exe = shutil.which("fab") or str(Path(sys.executable).parent / "fab")
    result = subprocess.run([exe, "-r", str(ROOT), "-H", "kepler-1", "report-version", "--stage", "test",
                             "--stages", str(project.stages), "--roles", "kepler"], cwd=project.root,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert head(fleet, "kepler-1") in result.stdout


def test_fab_unknown_host_key_is_one_line(project, fleet, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    project.stage(ssh={"known_hosts": str(empty)})
    result = fab(project, fleet, "-H", "kepler-1", "report-version", "--stage", "test",
                 "--stages", str(project.stages))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "kepler-1" in lines[0] and "unknown host key" in lines[0], result.stderr


def test_fab_failing_step_is_one_line_with_gits_fatal_line(project, fleet):
    project.stage(branch="no-such-branch")
    host = f"root@{fleet.host('newton-1').address}:2222"
    result = fab(project, fleet, "-H", host, "git-reset", "--stage", "test", "--stages", str(project.stages))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("pampa: error: [newton-1] git_reset failed (exit 128): fatal: ")


def test_fab_md_two_steps_each_with_its_flags(project, fleet):
    """docs/fab.md: `fab -H 10.0.2.7 git-fetch --stage production git-reset --stage production` (issue 22: its
    example gave the flags once, to the last task only, and failed)."""
    doc = (ROOT / "docs" / "fab.md").read_text()
    assert "fab -H 10.0.2.7 git-fetch --stage production git-reset --stage production" in doc
    project.stage()
    new = fleet.commit("Two steps with fab")
    host = f"root@{fleet.host('newton-1').address}:2222"
    flags = ["--stage", "test", "--stages", str(project.stages)]
    result = fab(project, fleet, "-H", host, "git-fetch", *flags, "git-reset", *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert head(fleet, "newton-1") == new
    assert "[newton-1] git_fetch" in result.stdout and "[newton-1] git_reset" in result.stdout


def test_fab_unknown_host_key_names_the_real_port_and_fabs_own_way_to_trust_it(project, fleet, tmp_path):
    """Issue 22: fab's host-key hint named `--accept-new-host-keys`, which fab rejects, and port 22 for a
    host reached on 2222."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    project.stage(ssh={"known_hosts": str(empty)})
    address = fleet.host("kepler-1").address
    result = fab(project, fleet, "-H", f"root@{address}:2222", "report-version", "--stage", "test",
                 "--stages", str(project.stages))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert f"({address}:2222): unknown host key" in lines[0]
    assert "PAMPA_ACCEPT_NEW_HOST_KEYS=1" in lines[0] and "--accept-new-host-keys" not in lines[0]
    assert empty.read_text() == ""
