"""Moved to ``engine/pool.py``; kept for old imports."""
from ..engine.pool import each_host  # noqa: F401
