"""A naive Fabric script: hosts in threads, but a new SSH connection for every step."""
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from fabric import Connection

spec = json.load(open(sys.argv[1]))


def host(entry):
    _, addr, port = entry
    for step in spec["steps"]:
        with Connection(addr, user=spec["user"], port=port, connect_kwargs={"key_filename": spec["key"]}) as c:
            if step[1] == "run":
                c.run(step[2], hide=True, in_stream=False)
            else:
                _, _, local, remote, mode = step
                remote = remote[2:] if remote.startswith("~/") else remote
                c.put(local, remote, preserve_mode=True)


with ThreadPoolExecutor(spec.get("parallel") or len(spec["hosts"])) as pool:
    list(pool.map(host, spec["hosts"]))
