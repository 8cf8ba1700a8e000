"""Stages: loading, merging and validating the YAML files under ``stages/``."""
from .load import COMMON, expand_range, load_stage, stage_files, stage_from_mapping
from .model import Host, Role, SecretFile, Stage

__all__ = ["COMMON", "Host", "Role", "SecretFile", "Stage", "expand_range", "load_stage", "stage_files", "stage_from_mapping"]
