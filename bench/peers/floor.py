"""The floor: the same command lines run locally with bash, no SSH, hosts in parallel (HOME = the host's home).

Each command starts a session of its own (setsid), as every command under sshd does: with the kernel's
autogroup scheduling (on here), a session is what gets a fair share of a busy machine, so the floor's
hosts compete for the CPU like the SSH tools' sessions do, not as one process's threads.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

spec = json.load(open(sys.argv[1]))


def host(entry):
    name = entry[0]
    home = spec["homes"][name]
    env = {**os.environ, "HOME": home}
    for step in spec["steps"]:
        if step[1] == "run":  # /root is each host's home inside its namespace: here, the home itself
            subprocess.run(["bash", "-c", step[2].replace("/root/", home + "/")], env=env, cwd=home, check=True,
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        else:
            _, _, local, remote, mode = step
            target = remote.replace("~", home, 1)
            tmp = target + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(open(local, "rb").read())
            os.replace(tmp, target)


with ThreadPoolExecutor(spec.get("parallel") or len(spec["hosts"])) as pool:
    list(pool.map(host, spec["hosts"]))
