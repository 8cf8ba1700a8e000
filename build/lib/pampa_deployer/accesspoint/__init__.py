"""The access point: a JSON-over-HTTP API for deploy requests and node versions (docs/access-point.md)."""
