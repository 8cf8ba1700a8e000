"""Write an Ansible inventory, config and playbook for the spec: forks = N, pipelining on."""
import json
import sys
from pathlib import Path

spec = json.load(open(sys.argv[1]))
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
lines = ["[fleet]"]
for name, addr, port in spec["hosts"]:
    lines.append(f"{name} ansible_host={addr} ansible_port={port} ansible_user={spec['user']} "
                 f"ansible_ssh_private_key_file={spec['key']} ansible_python_interpreter=/usr/bin/python3")
(out / "inventory.ini").write_text("\n".join(lines) + "\n")
(out / "ansible.cfg").write_text(
    "[defaults]\n"
    f"forks = {len(spec['hosts'])}\nhost_key_checking = True\ngathering = explicit\n"
    "interpreter_python = /usr/bin/python3\nretry_files_enabled = False\n"
    "[ssh_connection]\npipelining = True\n"
    f"ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={spec['known_hosts']}\n")
tasks = []
for step in spec["steps"]:
    if step[1] == "run":
        tasks.append({"name": step[0], "ansible.builtin.shell": {"cmd": step[2], "executable": "/bin/bash"}})
    else:
        _, name, local, remote, mode = step
        dest = remote.replace("~", "/root", 1)  # each host's home is /root inside its namespace
        tasks.append({"name": name, "ansible.builtin.copy": {"src": local, "dest": dest, "mode": f"{mode:04o}"}})
play = [{"hosts": "fleet", "gather_facts": False, "tasks": tasks}]
(out / "play.yml").write_text(json.dumps(play, indent=1))
