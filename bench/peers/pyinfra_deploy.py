"""Write a pyinfra inventory and deploy for the spec."""
import json
import sys
from pathlib import Path

spec = json.load(open(sys.argv[1]))
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
hosts = [(addr, {"ssh_port": port, "ssh_user": spec["user"], "ssh_key": spec["key"],
                 "ssh_known_hosts_file": spec["known_hosts"], "ssh_strict_host_key_checking": "yes"})
         for _, addr, port in spec["hosts"]]
(out / "inventory.py").write_text(f"hosts = {hosts!r}\n")
body = ["from pyinfra.operations import files, server", ""]
for step in spec["steps"]:
    if step[1] == "run":
        body.append(f"server.shell(name={step[0]!r}, commands=[{step[2]!r}])")
    else:
        _, name, local, remote, mode = step
        dest = remote.replace("~", "/root", 1)  # each host's home is /root inside its namespace
        body.append(f"files.put(name={name!r}, src={local!r}, dest={dest!r}, mode={format(mode, '04o')!r})")
(out / "deploy.py").write_text("\n".join(body) + "\n")
