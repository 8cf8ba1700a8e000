"""The pull-mode agent: a node that deploys itself from the access point (docs/pull-mode.md)."""
