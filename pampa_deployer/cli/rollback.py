"""Moved to ``engine/rollback.py`` (the rollback lifecycle lives in the engine); kept for old imports."""
from ..engine.rollback import previous_revision, resolve_target  # noqa: F401
