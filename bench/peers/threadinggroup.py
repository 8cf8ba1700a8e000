"""A hand-written Fabric ThreadingGroup script: step by step, all hosts in lockstep, one connection each."""
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from fabric import ThreadingGroup

spec = json.load(open(sys.argv[1]))
group = ThreadingGroup(*[f"{spec['user']}@{addr}:{port}" for _, addr, port in spec["hosts"]],
                       connect_kwargs={"key_filename": spec["key"]})
for step in spec["steps"]:
    if step[1] == "run":
        group.run(step[2], hide=True, in_stream=False)
    else:
        _, _, local, remote, mode = step
        remote = remote[2:] if remote.startswith("~/") else remote  # SFTP paths are relative to home
        with ThreadPoolExecutor(len(group)) as pool:
            list(pool.map(lambda c: c.put(local, remote, preserve_mode=True), group))
group.close()
