"""OpenSSH's client running each host's whole sequence as one script over one connection.

    openssh_script.py SPEC

One `ssh` per host: one handshake, one shell, one round trip for the whole sequence: the least any
SSH push tool can do for it. Each step runs in a subshell with stdin from /dev/null (so `cd` or
`exit` stay inside it, as in every tool) and the script stops at the first failing step. A secret
travels on ssh's stdin (never in a command's arguments): `head -c SIZE` into a 0600 temporary file,
renamed over the target, as openssh_cm does it. Hosts run in parallel, one thread each. The key
exchange is pinned to curve25519-sha256, the one pampa negotiates (see openssh_cm.py).
"""
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

spec = json.load(open(sys.argv[1]))


def base(address: str, port: int) -> list[str]:
    return ["ssh", "-F", "/dev/null", "-p", str(port), "-l", spec["user"], "-i", spec["key"],
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={spec['known_hosts']}", "-o", "ConnectTimeout=30",
            "-o", "KexAlgorithms=curve25519-sha256"]


def script_and_input() -> tuple[str, bytes]:
    """The one script every host runs, and the bytes its uploads read from stdin, in order."""
    lines, data = [], b""
    for step in spec["steps"]:
        if step[1] == "run":
            lines.append(f"( {step[2]}\n) </dev/null || exit $?")
        else:
            _, _, local, remote, mode = step
            content = open(local, "rb").read()
            target = remote if remote.startswith(("~", "/")) else "~/" + remote
            target = '"$HOME"' + shlex.quote(target[1:]) if target.startswith("~") else shlex.quote(target)
            tmp = f"{target}.script-tmp"
            lines.append(f"( umask 077 && head -c {len(content)} > {tmp} && chmod {mode:o} {tmp} && "
                         f"mv -f {tmp} {target} ) || exit $?")
            data += content
    return "\n".join(lines) + "\n", data


SCRIPT, INPUT = script_and_input()


def host(entry):
    name, address, port = entry
    result = subprocess.run(base(address, port) + [address, SCRIPT], input=INPUT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    if result.returncode != 0:
        raise SystemExit(f"{name}: exit {result.returncode}: {result.stderr.decode()[-300:]}")


with ThreadPoolExecutor(spec.get("parallel") or len(spec["hosts"])) as pool:
    list(pool.map(host, spec["hosts"]))
