"""Every remote command pampa sends on its own behalf, as exact strings (the way Kamal tests its
commands), plus their parsers; the lock commands also run for real in a local shell (no root needed)."""
from __future__ import annotations

import json

import pytest

from pampa_deployer.commands import git, lock, readiness, revlog
from pampa_deployer.engine.backends.local import LocalBackend

ROOT, STAGE = "~/.pampa/locks", "production"
D = "~/.pampa/locks/production.lock"


def test_lock_commands_exact():
    assert lock.renew_command(ROOT, STAGE, "tok", 90).script == (
        f'[ "$(cat {D}/token 2>/dev/null)" = tok ] && echo $(( $(date +%s) + 90 )) > {D}/expires.tmp && '
        f"mv {D}/expires.tmp {D}/expires && echo PAMPA-LOCK-RENEWED || "
        f"{{ echo PAMPA-LOCK-LOST; cat {D}/info.json 2>/dev/null; echo; }}")
    assert lock.release_command(ROOT, STAGE, "tok").script == (
        f'if [ "$(cat {D}/token 2>/dev/null)" = tok ]; then mv {D} {D}.released.$$ && rm -rf {D}.released.$$ '
        f"&& echo PAMPA-LOCK-RELEASED; else echo PAMPA-LOCK-NOT-OURS; fi")
    assert lock.status_command(ROOT, STAGE).script == (
        f"if [ -d {D} ]; then echo PAMPA-LOCK-HELD; cat {D}/info.json 2>/dev/null; echo; "
        f'echo "$(cat {D}/expires 2>/dev/null || echo 0) $(date +%s)"; else echo PAMPA-LOCK-FREE; fi')
    assert lock.unlock_command(ROOT, STAGE, {"by": "ana"}, force=True).script == (
        f"if [ -d {D} ]; then old=$(tr -d '\\n' 2>/dev/null < {D}/info.json); mv {D} {D}.unlocked.$$ && "
        f"rm -rf {D}.unlocked.$$ && printf '%s%s%s\\n' '{{\"by\": \"ana\", \"lock\": ' \"${{old:-null}}\" '}}' >> "
        f"~/.pampa/locks/production.unlocks.jsonl && echo PAMPA-LOCK-REMOVED && echo \"$old\"; "
        f"else echo PAMPA-LOCK-FREE; fi")
    write = (f"printf '%s' '{{\"user\": \"ana\"}}' > {D}/info.json && printf '%s' tok > {D}/token && "
             f"echo $((now + 90)) > {D}/expires")
    assert lock.acquire_command(ROOT, STAGE, {"user": "ana"}, "tok", 90).script == (
        f"mkdir -p ~/.pampa/locks && now=$(date +%s); if mkdir {D} 2>/dev/null; then {write} && "
        f"echo PAMPA-LOCK-ACQUIRED && exit 0; fi; exp=$(cat {D}/expires 2>/dev/null || echo 0); "
        f'if [ "$now" -gt "$exp" ] && mv {D} {D}.stale.$$ 2>/dev/null; then   '
        f"old=$(cat {D}.stale.$$/info.json 2>/dev/null); rm -rf {D}.stale.$$;   if mkdir {D} 2>/dev/null; then "
        f'{write} && echo PAMPA-LOCK-TOOK-STALE && echo "$old" && exit 0; fi; fi; echo PAMPA-LOCK-HELD; '
        f'cat {D}/info.json 2>/dev/null; echo; echo "$(cat {D}/expires 2>/dev/null) $now"')


def test_lock_values_are_quoted():
    script = lock.release_command("~/my locks", "prod;reboot", "t'k").script
    assert "~/'my locks/prod;reboot.lock'" in script and "'t'\"'\"'k'" in script


def test_lock_state_parsing():
    assert lock.parse_state("PAMPA-LOCK-FREE\n").state == lock.FREE
    assert lock.parse_state("").state == lock.FREE
    held = lock.parse_state('PAMPA-LOCK-HELD\n{"user": "ana", "branch": "main"}\n200 100\n')
    assert (held.state, held.info["user"], held.expires, held.now) == (lock.HELD, "ana", 200, 100)
    assert "held by ana@? (pid ?)" in held.describe() and "expires in 100s" in held.describe()
    stale = lock.parse_state('PAMPA-LOCK-HELD\n{"user": "bo"}\n100 250\n')
    assert stale.state == lock.STALE and "lease expired 150s ago" in stale.describe()
    broken = lock.parse_state("PAMPA-LOCK-HELD\nnot json\ngarbage\n")
    assert (broken.state, broken.info, broken.expires) == (lock.HELD, {}, None)


def test_lock_acquire_parsing():
    assert lock.parse_acquired("PAMPA-LOCK-ACQUIRED\n") == (True, None)
    assert lock.parse_acquired('PAMPA-LOCK-TOOK-STALE\n{"user": "bo"}\n') == (True, {"user": "bo"})
    assert lock.parse_acquired("PAMPA-LOCK-TOOK-STALE\n") == (True, {})
    assert lock.parse_acquired('PAMPA-LOCK-HELD\n{"user": "bo"}\n1 2\n') == (False, None)
    assert lock.parse_acquired("") == (False, None)


def test_lock_commands_in_a_real_local_shell(tmp_path):
    """acquire, refuse a second holder, renew, take over when stale, release: through bash, as on a host."""
    be = LocalBackend("local", home=str(tmp_path))
    be.connect()
    out = be.run(lock.acquire_command(ROOT, STAGE, {"user": "ana"}, "t1", 90)).stdout
    assert lock.parse_acquired(out) == (True, None)
    second = be.run(lock.acquire_command(ROOT, STAGE, {"user": "bo"}, "t2", 90)).stdout
    assert lock.parse_acquired(second) == (False, None)
    assert lock.parse_state(second).info == {"user": "ana"}
    assert "PAMPA-LOCK-LOST" in be.run(lock.renew_command(ROOT, STAGE, "t2", 90)).stdout
    assert "PAMPA-LOCK-RENEWED" in be.run(lock.renew_command(ROOT, STAGE, "t1", 90)).stdout
    (tmp_path / ".pampa/locks/production.lock/expires").write_text("1\n")  # the lease ran out
    assert lock.parse_state(be.run(lock.status_command(ROOT, STAGE)).stdout).state == lock.STALE
    took = be.run(lock.acquire_command(ROOT, STAGE, {"user": "bo"}, "t2", 90)).stdout
    assert lock.parse_acquired(took) == (True, {"user": "ana"})
    assert "PAMPA-LOCK-NOT-OURS" in be.run(lock.release_command(ROOT, STAGE, "t1")).stdout
    assert "PAMPA-LOCK-RELEASED" in be.run(lock.release_command(ROOT, STAGE, "t2")).stdout
    assert lock.parse_state(be.run(lock.status_command(ROOT, STAGE)).stdout).state == lock.FREE


def test_unlocks_log_is_json_lines_in_a_real_local_shell(tmp_path):
    """docs/operations.md: `pampa unlock` appends who, when and why, with the removed lock's info, to
    STAGE.unlocks.jsonl: one JSON object per line."""
    be = LocalBackend("local", home=str(tmp_path))
    be.connect()
    assert lock.parse_acquired(be.run(lock.acquire_command(ROOT, STAGE, {"user": "ana"}, "t1", 90)).stdout)[0]
    assert "PAMPA-LOCK-REMOVED" in be.run(lock.unlock_command(ROOT, STAGE, {"by": "bo", "message": "it's 'dead'"}, force=True)).stdout
    assert lock.parse_acquired(be.run(lock.acquire_command(ROOT, STAGE, {"user": "cy"}, "t2", 90)).stdout)[0]
    (tmp_path / ".pampa/locks/production.lock/info.json").unlink()  # a lock whose info was lost
    assert "PAMPA-LOCK-REMOVED" in be.run(lock.unlock_command(ROOT, STAGE, {"by": "di"}, force=True)).stdout
    assert "PAMPA-LOCK-FREE" in be.run(lock.unlock_command(ROOT, STAGE, {"by": "ed"})).stdout
    lines = (tmp_path / ".pampa/locks/production.unlocks.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"by": "bo", "message": "it's 'dead'", "lock": {"user": "ana"}}, {"by": "di", "lock": None}]


def test_revision_log_commands_exact():
    base = revlog.base("~/code/shop")
    assert revlog.log_path("~/code/shop/") == "~/code/shop.revisions.jsonl"
    assert revlog.revision_command(base).line() == "git -C ~/code/shop rev-parse HEAD 2>/dev/null || true"
    assert revlog.append_command(base, {"stage": "production"}).line() == (
        'a=$(git -C ~/code/shop rev-parse HEAD 2>/dev/null); [ -d ~/code ] || mkdir -p ~/code; '
        'if [ -n "$a" ]; then v="\\"$a\\""; else v=null; fi; '
        "printf '%s%s%s\\n' '{\"after\": ' \"$v\" ', \"stage\": \"production\"}' >> ~/code/shop.revisions.jsonl; "
        ': > ~/code/shop.deploying.json; echo "$a"')
    assert revlog.read_command(base, 20).line() == (
        "tail -n 20 ~/code/shop.revisions.jsonl 2>/dev/null; echo '--pampa-head--'; "
        "git -C ~/code/shop log -1 --format='%H %s' 2>/dev/null || true; "
        "echo '--pampa-state--'; cat ~/code/shop.deploying.json 2>/dev/null || true")
    assert revlog.start_command(base, {"run": "r1", "step": None}).line() == (
        "[ -d ~/code ] || mkdir -p ~/code; "
        "printf '%s\\n' '{\"run\": \"r1\", \"step\": null}' > ~/code/shop.deploying.json; "
        "git -C ~/code/shop rev-parse HEAD 2>/dev/null || true")
    assert revlog.step_command(base, {"run": "r1", "step": "migrate"}).line() == (
        "printf '%s\\n' '{\"run\": \"r1\", \"step\": \"migrate\"}' > ~/code/shop.deploying.json")
    assert not revlog.start_command(base, {}).killable  # bookkeeping: no process group of its own
    # Built-ins and one git, changing no shell state: the session's own shell runs them (no subshell, no fork).
    assert not revlog.start_command(base, {}).subshell and not revlog.step_command(base, {}).subshell
    assert revlog.append_command(base, {}).subshell  # it sets variables: kept in a subshell


def test_revision_log_append_and_read_in_a_real_local_shell(tmp_path):
    be = LocalBackend("local", home=str(tmp_path))
    base = revlog.base("~/code/shop")
    assert be.run(revlog.append_command(base, {"result": "ok", "before": None})).ok
    entries, head, subject = revlog.parse(be.run(revlog.read_command(base)).stdout)
    assert entries == [{"after": None, "before": None, "result": "ok"}] and head is None and subject == ""
    line = (tmp_path / "code/shop.revisions.jsonl").read_text()
    assert json.loads(line)["after"] is None


def test_revision_log_parse_skips_bad_lines():
    text = '{"a": 1}\nnot json\n{"a": 2}\n--pampa-head--\nabc123 Fix the thing\n'
    assert revlog.parse(text) == ([{"a": 1}, {"a": 2}], "abc123", "Fix the thing")


def test_rollback_queries_exact():
    assert git.parent_revision("~/code/shop").line() == "cd ~/code/shop && git rev-parse HEAD~1"
    assert git.verify_commit("~/code/shop", "abc1; reboot").line() == \
        "cd ~/code/shop && git rev-parse --verify --quiet 'abc1; reboot^{commit}'"
    assert git.reset_hard("abc1") == "git reset --hard abc1"


def test_programs_used_skips_shell_syntax():
    from pampa_deployer.commands import Command
    cmds = [Command("export A=1 && bundle install"), Command("if [ -d x ]; then git clone y; fi"),
            Command("sudo systemctl restart app || true"), Command("RAILS_ENV=production bin/rails db:migrate")]
    # bin/rails is shipped in the app: it arrives with the checkout, so it is not a program to look for.
    assert readiness.programs_used(cmds) == ["bundle", "git", "systemctl"]


def test_unlock_refuses_a_live_lock_without_force_in_a_real_local_shell(tmp_path):
    be = LocalBackend("local", home=str(tmp_path))
    info = {"user": "ana", "machine": "box", "pid": 7}
    assert "PAMPA-LOCK-ACQUIRED" in be.run(lock.acquire_command(ROOT, STAGE, info, "t1", 90)).stdout
    refused = be.run(lock.unlock_command(ROOT, STAGE, {"by": "bob"})).stdout
    assert refused.startswith("PAMPA-LOCK-LIVE")
    state = lock.parse_state(refused)
    assert state.state == lock.HELD and "ana@box (pid 7)" in state.describe()
    assert (tmp_path / ".pampa/locks/production.lock").is_dir()
    assert "PAMPA-LOCK-REMOVED" in be.run(lock.unlock_command(ROOT, STAGE, {"by": "bob"}, force=True)).stdout
    # The holder's next renewal finds it gone; a new holder's info names who took it.
    assert lock.parse_lost(be.run(lock.renew_command(ROOT, STAGE, "t1", 90)).stdout).startswith("removed")
    be.run(lock.acquire_command(ROOT, STAGE, {"user": "bob", "machine": "ci", "pid": 9}, "t2", 90))
    assert lock.parse_lost(be.run(lock.renew_command(ROOT, STAGE, "t1", 90)).stdout) == \
        "taken over by bob@ci (pid 9)"
    assert lock.parse_lost(be.run(lock.renew_command(ROOT, STAGE, "t2", 90)).stdout) is None


def test_unlock_ends_a_maintenance_lock_without_force_in_a_real_local_shell(tmp_path):
    """`pampa lock acquire` holds the stage with a lease that never runs out; `pampa unlock` ends it."""
    be = LocalBackend("local", home=str(tmp_path))
    info = {"user": "ana", "machine": "box", "pid": 7, "maintenance": True}
    assert "PAMPA-LOCK-ACQUIRED" in be.run(lock.acquire_command(ROOT, STAGE, info, "t1", 10 ** 9)).stdout
    assert "PAMPA-LOCK-REMOVED" in be.run(lock.unlock_command(ROOT, STAGE, {"by": "bob"})).stdout


def test_start_record_marks_a_host_incomplete_until_the_log_line_in_a_real_local_shell(tmp_path):
    be = LocalBackend("local", home=str(tmp_path))
    base = revlog.base("~/code/shop")
    assert be.run(revlog.start_command(base, {"run": "r1", "step": None})).ok
    assert be.run(revlog.step_command(base, {"run": "r1", "step": "migrate"})).ok
    assert revlog.parse_state(be.run(revlog.read_command(base)).stdout) == {"run": "r1", "step": "migrate"}
    assert be.run(revlog.append_command(base, {"result": "ok"})).ok
    out = be.run(revlog.read_command(base)).stdout
    assert revlog.parse_state(out) is None and revlog.parse(out)[0] == [{"after": None, "result": "ok"}]


def test_step_record_rides_in_the_steps_first_command():
    base = revlog.base("~/code/shop")
    assert revlog.step_record(base, {"run": "r1", "step": "migrate"}) == (
        "printf '%s\\n' '{\"run\": \"r1\", \"step\": \"migrate\"}' > ~/code/shop.deploying.json")
    # A relative code path is anchored at the home: a session's prefix may have moved its shell.
    assert revlog.step_record(revlog.base("code/shop"), {}).endswith(" > ~/code/shop.deploying.json")
    assert revlog.step_record(revlog.base("/srv/shop"), {}).endswith(" > /srv/shop.deploying.json")


def test_session_script_exact():
    """What the session shell reads per command: record, body in its own group, status marker."""
    from pampa_deployer.engine.backends.session import script
    assert script("echo hi", "M") == (
        "(\necho hi\n) </dev/null\n"
        "__pampa_rc=$?; printf '%s %d\\n' 'M' \"$__pampa_rc\"; printf '%s\\n' 'M' >&2\n")
    assert script("cd x && echo hi", "M", tag="s1", kind="bash", record="printf '%s\\n' '{}' > ~/a.json",
                  ack="ACK") == (
        "__pampa_rec=0; printf '%s\\n' '{}' > ~/a.json || __pampa_rec=$?\n"
        "if [ \"$__pampa_rec\" = 0 ]; then echo 'ACK'; "
        "( echo $BASHPID > \"${TMPDIR:-/tmp}\"/pampa-s1.pgid || exit\ncd x && echo hi\n) </dev/null\nfi\n"
        "__pampa_rc=$?; printf '' > \"${TMPDIR:-/tmp}\"/pampa-s1.pgid; "
        "printf '%s %d %d\\n' 'M' \"$__pampa_rc\" \"$__pampa_rec\"; printf '%s\\n' 'M' >&2\n")
    # The prefix runs in the session shell itself, once.
    assert script("source ~/env", "M", in_subshell=False).startswith("source ~/env\n__pampa_rc=$?; ")
    assert script("printf x > f", "M", in_subshell=False, braced=True).startswith(
        "{\nprintf x > f\n} </dev/null\n__pampa_rc=$?; ")


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_session_commands_in_a_real_local_shell(tmp_path, shell):
    """The session's own text run by bash and dash started as sshd starts them (setsid, no terminal):
    each killable command leads the group its pgid file names, exit codes and `exit` stay the body's,
    the record is written before the body (even one that fails) and a failed record keeps the body from
    running; the pgid file is emptied after each command and removed when the shell exits."""
    import subprocess

    from pampa_deployer.commands import procgroup
    from pampa_deployer.engine.backends.session import script
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "SHELL": f"/bin/{shell}"}
    pgid = tmp_path / "pampa-s1.pgid"
    rec = f"printf '%s\\n' done > {tmp_path}/rec.json"
    probe = f"cut -d' ' -f5 /proc/self/stat > {tmp_path}/pg; cat {pgid} > {tmp_path}/file; echo body; exit 3"
    text = (procgroup.session_setup("s1", "HI") + "\n"
            + script(probe, "M1", tag="s1", kind=shell.replace("dash", "sh"), record=rec, ack="ACK")
            + f"cat {pgid} > {tmp_path}/after\n"
            + script("echo never", "M2", tag="s1", kind="sh", record=f"printf x > {tmp_path}/no/such/dir"))
    proc = subprocess.run(["setsid", "-w", shell, "-s"], input=text, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=30)
    hello, ack, body, m1, m2 = proc.stdout.splitlines()
    assert hello == f"HI {'bash' if shell == 'bash' else 'sh'}" and ack == "ACK" and body == "body"
    assert m1 == "M1 3 0"  # the body's status; the record was written
    assert m2.startswith("M2 0 ") and m2 != "M2 0 0" and "never" not in proc.stdout  # record failed: no body
    assert (tmp_path / "rec.json").read_text() == "done\n"
    assert (tmp_path / "pg").read_text().strip() == (tmp_path / "file").read_text().strip() != ""
    assert (tmp_path / "after").read_text() == ""  # emptied once the command ended
    assert not pgid.exists()  # removed when the shell exited


# -- a small file through the shell session ------------------------------------------------------------

def test_upload_command_exact():
    from pampa_deployer.commands.upload import upload_command
    assert upload_command("~/code/app/config.rb", b"A='b'\n", 0o600, "tok").script == (
        "set +x; cd && umask 0177 && t=code/app/.config.rb.pampa-tok && "
        "if [ -d code/app/config.rb ]; then echo 'code/app/config.rb: is a directory' >&2; exit 1; fi && "
        "if printf '%b' 'A=\\0047b\\0047\n' > \"$t\" && mv -f \"$t\" code/app/config.rb; then :; "
        "else rc=$?; rm -f \"$t\"; exit $rc; fi")
    # A mode a umask cannot give (executable bits) gets a chmod before the rename; paths are quoted.
    script = upload_command("/etc/my app/run.sh", b"x", 0o750, "tok").script
    assert "umask 0027 && t='/etc/my app/.run.sh.pampa-tok' && " in script
    assert "chmod 0750 \"$t\" && mv -f \"$t\" '/etc/my app/run.sh'; then" in script
    # Never wrapped in a process group: that would pass the content to `setsid sh -c` as an argument.
    assert upload_command("~/x", b"secret", 0o600, "tok").killable is False


def test_upload_command_writes_every_byte_privately_and_atomically(tmp_path):
    """Run for real in bash and dash: all 256 byte values survive, the mode is exact, no temp file stays."""
    import os
    import stat
    import subprocess

    from pampa_deployer.commands.upload import upload_command
    (tmp_path / "d").mkdir()
    content = bytes(range(256)) * 2 + b"'\\%b\\c end"
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    for shell, mode in (("bash", 0o600), ("dash", 0o640), ("bash", 0o755)):
        command = upload_command("~/d/secret.bin", content, mode, "t0k")
        done = subprocess.run([shell, "-c", command.body()], env=env, cwd="/", capture_output=True, timeout=30)
        assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", (shell, done)
        target = tmp_path / "d" / "secret.bin"
        assert target.read_bytes() == content and stat.S_IMODE(target.stat().st_mode) == mode, (shell, mode)
        assert os.listdir(tmp_path / "d") == ["secret.bin"]
    # The content never reaches a process's arguments: printf is the shell's own built-in.
    assert "printf '%b'" in command.script and command.script.index("printf") < command.script.index("mv -f")


def test_upload_command_failures_leave_nothing_and_mask_the_content(tmp_path):
    import os
    import subprocess

    from pampa_deployer.commands.upload import upload_command
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    (tmp_path / "taken").mkdir()
    missing = upload_command("~/no/such/dir/f", b"s3cret-value", 0o600, "t0k")
    done = subprocess.run(["bash", "-c", missing.body()], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "No such file or directory" in done.stderr
    folder = upload_command("~/taken", b"s3cret-value", 0o600, "t0k")
    done = subprocess.run(["bash", "-c", folder.body()], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stderr == "taken: is a directory\n"
    assert os.listdir(tmp_path / "taken") == [] and sorted(os.listdir(tmp_path)) == ["taken"]
    # Should the content ever be echoed (even escaped), the command's redactor masks it.
    assert folder.redactor.mask("x s3cret-value y") == "x ******** y"
    assert "s3cret-value" not in folder.display() and "s3cret" not in folder.redactor.mask(folder.script)


def test_only_small_files_go_through_the_session():
    """The shell reads the command a byte at a time: past MAX_BYTES escaped, SFTP is cheaper."""
    from pampa_deployer.commands.upload import MAX_BYTES, escape, fits
    assert MAX_BYTES == 8 * 1024
    assert fits(b"a" * MAX_BYTES) and not fits(b"a" * (MAX_BYTES + 1))
    assert escape(b"\x00\xff'\\") == "\\0000\\0377\\0047\\0134"
    assert not fits(bytes(range(256)) * 10)  # 2.5 KiB of every byte value is 8.8 KiB escaped


def test_a_dead_holders_lock_is_taken_over_and_unlocked_before_its_lease_in_a_real_local_shell(tmp_path):
    """Issue 22: a deploy killed on this machine leaves a lock whose lease still runs. Given its info.json
    (the holder judged dead here), acquire takes it over and unlock removes it without --force; a lock that
    changed since (a new holder) is neither taken over nor removed."""
    be = LocalBackend("local", home=str(tmp_path))
    dead = {"user": "ana", "machine": "laptop", "pid": 4121}
    assert "PAMPA-LOCK-ACQUIRED" in be.run(lock.acquire_command(ROOT, STAGE, dead, "t1", 90)).stdout
    held = be.run(lock.acquire_command(ROOT, STAGE, {"user": "bo"}, "t2", 90)).stdout
    state = lock.parse_state(held)
    assert state.state == lock.HELD and json.loads(state.raw) == dead
    other = json.dumps({"user": "cy", "pid": 1}, sort_keys=True)
    assert not lock.parse_acquired(be.run(lock.acquire_command(ROOT, STAGE, {"user": "bo"}, "t2", 90,
                                                               dead=other)).stdout)[0]
    took = be.run(lock.acquire_command(ROOT, STAGE, {"user": "bo"}, "t2", 90, dead=state.raw)).stdout
    assert lock.parse_acquired(took) == (True, dead)
    raw = lock.parse_state(be.run(lock.status_command(ROOT, STAGE)).stdout).raw
    assert be.run(lock.unlock_command(ROOT, STAGE, {"by": "ed"}, dead=other)).stdout.startswith("PAMPA-LOCK-LIVE")
    assert "PAMPA-LOCK-REMOVED" in be.run(lock.unlock_command(ROOT, STAGE, {"by": "ed"}, dead=raw)).stdout
    assert not (tmp_path / ".pampa/locks/production.lock").exists()


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_commands_sent_ahead_in_a_real_local_shell(tmp_path, shell):
    """Issue 24: consecutive steps sent together. The shell runs each only while every earlier one
    succeeded (a failed record counts), the session's sshd is alive, and, for a step's first command,
    no stop file exists; else it prints a "skip" marker. A killable one sent before the hello said which
    shell it is still leads its own process group."""
    import subprocess

    from pampa_deployer.commands import procgroup
    from pampa_deployer.engine.backends.session import ahead, script
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "SHELL": f"/bin/{shell}"}
    stop = f"{tmp_path}/s1.stop"

    def run(*entries, sshd="$PPID"):
        text = f"__pampa_sshd={sshd}; " + procgroup.session_setup("s1", "HI") + "\n__pampa_go=1\n" + "".join(
            ahead(script(body, "M", tag=tag, kind=None, record=record, ack="ACK"), "M", stop if first else None)
            for body, tag, record, first in entries)
        done = subprocess.run(["setsid", "-w", shell, "-s"], input=text, capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=30)
        return [line for line in done.stdout.splitlines()[1:] if line != "ACK"], done.stderr.splitlines()

    probe = f"cut -d' ' -f5 /proc/self/stat > {tmp_path}/pg; cat {tmp_path}/pampa-s1-1.pgid > {tmp_path}/file"
    out, err = run((probe + "; echo one", "s1-1", "true", True), ("echo two", None, None, False),
                   ("echo three; exit 4", None, None, True), ("echo four", None, None, True))
    assert out == ["one", "M 0 0", "two", "M 0", "three", "M 4", "M skip"] and err == ["M"] * 4
    assert (tmp_path / "pg").read_text().strip() == (tmp_path / "file").read_text().strip() != ""
    out, _ = run(("echo one", None, "false", True), ("echo two", None, None, False))  # the record failed
    assert out[0].startswith("M 0 ") and out[0] != "M 0 0" and out[1:] == ["M skip"]
    (tmp_path / "s1.stop").touch()  # the run is stopping: no step starts, a step's later command goes on
    out, _ = run(("echo one", None, None, False), ("echo two", None, None, True))
    assert out == ["one", "M 0", "M skip"]
    (tmp_path / "s1.stop").unlink()
    out, _ = run(("echo one", None, None, True), sshd="999999999")  # pampa's connection has gone
    assert out == ["M skip"]
