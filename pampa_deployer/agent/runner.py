"""Run this node's sequence locally: the same plan, step builders and engine as ``pampa deploy``.

The only differences from a push deploy: commands run on this machine (``LocalBackend``),
the plan has one host (this node), the gate is kept by the access point (a gated node only
ever starts an ALLOWED request), and versions are reported with the node's own token.
"""
from __future__ import annotations

from ..engine.deployment import BackendPool, RunOptions, execute
from ..engine.local import LocalBackend
from ..errors import AccessPointError
from ..plan import build_plan


class NodeAccessPoint:
    """What the engine asks of the access point, for one node of one pull request."""

    def __init__(self, client, deploy_id: int):
        self.client, self.deploy_id = client, deploy_id

    def allow(self, deploy_id) -> None:
        """Nothing to do: the server opens the gate itself when every kepler reported success."""

    def report_version(self, node, stage, revision, roles, deploy_id) -> None:
        self.client.report_version(node, stage, revision, roles, self.deploy_id)


def run_sequence(stage, node: str, deploy_id: int, client, bus, stop, home: str | None = None):
    """Deploy this node; returns the engine's RunResult (one host)."""
    plan = build_plan(stage, hosts=[node])
    pool = BackendPool(lambda host: LocalBackend(host.name, home))
    try:
        return execute(plan, pool, bus, RunOptions(parallel=1), stop, NodeAccessPoint(client, deploy_id),
                       preflight=lambda: deploy_id)
    finally:
        pool.close_all()


__all__ = ["AccessPointError", "NodeAccessPoint", "run_sequence"]
