"""Secret files against the real fleet: through the shell session when it is on (no SFTP), else SFTP."""
from __future__ import annotations

import os
import stat
import time

import pytest

from pampa_deployer.commands.command import Command
from pampa_deployer.commands.upload import MAX_BYTES
from pampa_deployer.engine.backends.ssh import SSHBackend, SSHSettings
from pampa_deployer.inventory import stage_from_mapping
from pampa_deployer.steps.actions import Upload

pytestmark = pytest.mark.fleet


def _backend(fleet, session: bool) -> SSHBackend:
    host = fleet.hosts[0]
    stage = stage_from_mapping({"app": "up", "user": "root", "key": str(fleet.key),
                                "ssh": {"known_hosts": str(fleet.known_hosts), "shell_session": session},
                                "hosts": {host.name: {"address": host.address, "port": host.port,
                                                      "roles": ["newton"]}}})
    backend = SSHBackend(stage.hosts[0], SSHSettings.from_stage(stage))
    backend.connect()
    return backend


@pytest.mark.parametrize("session", [True, False])
def test_upload_is_exact_private_and_leaves_no_temp_file(fleet, session):
    home = fleet.home(fleet.hosts[0].name)
    folder = home / "uploads"
    folder.mkdir(exist_ok=True)
    (folder / "secret.bin").write_bytes(b"old")
    content = bytes(range(256)) + b"PASSWORD='x'\n"
    backend = _backend(fleet, session)
    try:
        backend.put(Upload(source="s", remote="~/uploads/secret.bin", mode=0o600, content=content))
        backend.put(Upload(source="s", remote="~/uploads/tool.sh", mode=0o750, content=b"#!/bin/sh\n"))
        # Only a session-less backend opened SFTP: with the session, the upload was one command.
        assert (backend._sftp is None) == session
    finally:
        backend.close()
    assert (folder / "secret.bin").read_bytes() == content
    assert stat.S_IMODE((folder / "secret.bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "tool.sh").stat().st_mode) == 0o750
    assert sorted(os.listdir(folder)) == ["secret.bin", "tool.sh"]


def test_large_file_goes_over_sftp_and_a_failed_upload_is_an_error(fleet):
    home = fleet.home(fleet.hosts[0].name)
    backend = _backend(fleet, True)
    try:
        big = os.urandom(MAX_BYTES + 1)
        backend.put(Upload(source="s", remote="~/big.bin", mode=0o600, content=big))
        assert backend._sftp is not None and (home / "big.bin").read_bytes() == big
        with pytest.raises(OSError, match="No such file or directory"):
            backend.put(Upload(source="s", remote="~/no/such/folder/x", mode=0o600, content=b"s3cret"))
        # The session is still usable after a failed upload.
        assert backend.run(Command("echo still here")).stdout == "still here\n"
    finally:
        backend.close()


def pgid_files(fleet, session: bool) -> set[str]:
    """The names of the pgid files on the host, listed by a command that writes none."""
    backend = _backend(fleet, session)
    try:
        listing = backend.run(Command("ls \"${TMPDIR:-/tmp}\"; true", killable=False)).stdout
    finally:
        backend.close()
    return {name for name in listing.split() if name.startswith("pampa-") and name.endswith(".pgid")}


@pytest.mark.parametrize("session", [True, False])
def test_step_commands_lead_the_process_group_their_pgid_file_names_and_start_no_shell(fleet, session,
                                                                                     monkeypatch):
    """A step command (killable) leads a process group of its own, whose id is in its pgid file, so a
    stop ends all it started; no construction starts a shell or a `setsid` for it (the session id
    stays the session's). pampa's own short commands (killable=False) never write a pgid file."""
    from dataclasses import replace
    # pgrp and session id of the process running the probe, then every pgid file's content.
    probe = Command("cut -d' ' -f5,6 /proc/self/stat; cat \"${TMPDIR:-/tmp}\"/pampa-*.pgid 2>/dev/null; true")
    from pampa_deployer.commands import procgroup
    tags: list[str] = []  # the tags of this test's sessions and commands (the hosts' /tmp is shared)
    new_tag = procgroup.new_tag
    monkeypatch.setattr(procgroup, "new_tag", lambda: tags.append(new_tag()) or tags[-1])
    backend = _backend(fleet, session)
    try:
        own = [backend.run(replace(probe, killable=False)).stdout.split() for _ in range(2)]
        steps = [backend.run(probe).stdout.split() for _ in range(2)]
    finally:
        backend.close()
    for pgrp, sid, *pgids in steps:
        assert pgrp in pgids  # the group a stop signals is the one the command runs in
    assert steps[0][0] != steps[1][0]  # one group per command
    if session:  # one shell: every command in the session sshd made for it; no setsid anywhere
        assert len({sid for _, sid, *_ in own + steps}) == 1
        assert all(pgrp not in pgids for pgrp, _, *pgids in own)
    else:  # a channel per command: sshd's setsid made each channel's shell lead a session and group
        assert all(pgrp == sid for pgrp, sid, *_ in steps) and len({sid for _, sid, *_ in own + steps}) == 4
    # No pgid file outlives its command (a channel) or its session (the shell's EXIT trap removes it).
    ours = {f"pampa-{tag}.pgid" for tag in tags}
    assert ours
    deadline = time.monotonic() + 10
    while pgid_files(fleet, session) & ours and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pgid_files(fleet, session) & ours
