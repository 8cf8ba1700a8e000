"""Pampa steps for Fabric users: ``fab -H host1,host2 TASK [--stage production | --app APP --repo URL]``.

Examples:
    fab -H kepler-1.example.com deploy --stage production            # the host's roles, from the stage
    fab -H 10.0.1.7,10.0.1.8 deploy --stage production --roles newton # a role's sequence
    fab -H 10.0.1.7 git-fetch --stage production git-reset --stage production  # each task its flags
    fab -H 10.0.1.7 git-fetch --app mysaas --repo git@github.com:acme/mysaas.git
    fab -H 10.0.1.7 restart-puma --stage production

Tasks: deploy, git-fetch, git-reset, secrets, migrate, bundle, switch-release, restart-puma,
restart-processes, restart-workers, health-check, report-version. ``fab --list`` shows them.
In an app's repository, these two lines in its own fabfile.py give the same tasks (docs/fab.md).
Fabric runs the hosts one after another; the kepler gate and the lock need
``pampa deploy``.
"""
from pampa_deployer.tasks import collection

ns = collection()
