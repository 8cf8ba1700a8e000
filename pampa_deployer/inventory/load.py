"""Load a stage: read the files, substitute the environment, merge the layers, validate, build the model.

Nothing here opens a connection: every inventory error is found before any SSH.
"""
from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, ConfigErrors, PampaWarning
from ..redact import Redactor, secret_fragments
from ..sequences import DEFAULT_GATED, DEFAULT_SEQUENCES, SKIPPING_STEPS, STEP_ORDER
from ..shell import fill_plain
from . import layers, schema, validate, yamlfile
from .model import Host, Role, SecretFile, Stage, frozen
from .tasks import load_tasks

COMMON = "common"
"""``stages/common.yml`` holds the settings shared by every stage; it is not a stage itself."""

_RANGE = re.compile(r"^(?P<head>[^\[\]]*)\[(?P<lo>\d+):(?P<hi>\d+)\](?P<tail>[^\[\]]*)$")
MAX_RANGE = 10_000
"""One range entry may expand to this many hosts at most (a typo like [1:100000] is refused)."""


class BadRange(ValueError):
    """A host name with brackets that are not one ``[low:high]`` range of numbers."""


def stage_files(root: Path) -> dict[str, Path]:
    """Stage name -> file, for every ``*.yml``/``*.yaml`` in ``root`` except common."""
    try:
        if not root.is_dir():
            return {}
        entries = sorted(root.iterdir())
    except OSError as e:
        raise ConfigError(f"{yamlfile.display_path(root)}/: cannot read the stages folder: {e.strerror}") from e
    found: dict[str, Path] = {}
    for path in entries:
        if path.suffix in (".yml", ".yaml") and path.stem != COMMON and not path.stem.startswith("."):
            found.setdefault(path.stem, path)
    return found


def _common_file(root: Path) -> Path | None:
    for suffix in (".yml", ".yaml"):
        if (root / (COMMON + suffix)).is_file():
            return root / (COMMON + suffix)
    return None


def load_stage(name: str, root: Path | str = "stages", overrides: Mapping[str, Any] | None = None,
               environ: Mapping[str, str] | None = None) -> Stage:
    """Read, merge and validate stage ``name`` from the folder ``root``.

    ``overrides`` are command-line settings (e.g. ``{"branch": "hotfix"}``); they win over everything.
    Raises ``ConfigError`` (one line) or ``ConfigErrors`` (one line per problem).
    """
    root = Path(root)
    environ = os.environ if environ is None else environ
    files = stage_files(root)
    shown_root = yamlfile.display_path(root)
    if root.is_file():  # `--stages stages/production.yml`: the folder is wanted, the stage is named apart
        raise ConfigError(f"{shown_root}: a file, not a folder; --stages takes the folder of stage files, here "
                          f"--stages {yamlfile.display_path(root.parent)} (and the stage by name: {root.stem})")
    if not files and not root.is_dir():  # stage_files read the folder (or said why it cannot)
        raise ConfigError(f"{shown_root}/: no stages folder here; run `pampa init` to create one, "
                          "or pass --stages DIR")
    if name not in files:
        known = ", ".join(files) or "none"
        raise ConfigError(f"{shown_root}/: unknown stage '{name}'{validate.suggest(name, files)}; "
                          f"stages that exist: {known}")

    common = _common_file(root)
    named = [(yamlfile.display_path(p), yamlfile.load(p)) for p in ([common] if common else []) + [files[name]]]
    return build_stage(name, named, root, overrides, environ)


def stage_from_mapping(data: dict, name: str = "command-line", root: Path | str = ".",
                       environ: Mapping[str, str] | None = None) -> Stage:
    """A stage from settings given in code or on a command line (``fab``), validated like a file."""
    return build_stage(name, [(name, data)], Path(root), None, os.environ if environ is None else environ)


def build_stage(name: str, named: list[tuple[str, dict]], root: Path, overrides: Mapping[str, Any] | None,
                environ: Mapping[str, str]) -> Stage:
    """Validate each ``(where, mapping)`` layer, merge them over the defaults, and build the Stage."""
    errors: list[str] = []
    if not named[-1][1]:
        raise ConfigError(f"{named[-1][0]}: the stage file is empty; give it at least `hosts:` "
                          "(see `pampa init` for a commented example)")
    raw_layers: list[tuple[str, dict]] = [("default", schema.defaults())]
    for where, data in named:
        data = {k: v for k, v in data.items() if not str(k).startswith(validate.EXTENSION_PREFIX)}
        unresolved: set[str] = set()  # checked once filled in: `url: ${AP_URL}` is judged by what it becomes
        data = layers.expand_env(data, where, environ, errors, unresolved=unresolved)
        errors.extend(validate.check_file(data, where, frozenset(unresolved)))
        raw_layers.append((where, data))
    if errors:
        raise ConfigErrors(errors)

    settings, origins = layers.merge(raw_layers)
    stage_where = named[-1][0]
    shown_root = yamlfile.display_path(root)

    by_prefix = _origin_index(origins)

    def where_of(dotted: str) -> str:
        return origins.get(dotted) or by_prefix.get(dotted) or stage_where

    if not settings.get("app"):
        errors.append(f"{stage_where}: app: missing; set the application name (e.g. `app: mysaas`) "
                      f"here or in {shown_root}/{COMMON}.yml")
    roles = _roles(settings, where_of, errors)
    tasks = _tasks(settings, root, where_of, errors)
    _check_steps(settings, roles, tasks, where_of, errors)
    _check_checks(settings, roles, where_of, errors)
    empty = {str(e): where for where, data in named if isinstance(data.get("hosts"), dict)
             for e, spec in data["hosts"].items() if spec is None}  # `k-1:` alone: a host without settings
    hosts = _hosts(settings, roles, overrides or {}, where_of, stage_where, errors, empty)
    secret_files, fragments = _secret_files(settings, root, environ, where_of, errors)
    if errors:
        raise ConfigErrors(errors)

    redactor = Redactor().with_values(*_secret_values(settings), *fragments) \
        .with_public(*_public_words(name, settings, hosts, roles, secret_files))
    return Stage(name=name, file=stage_where, root=root, settings=frozen(settings),
                 origins=frozen(origins), hosts=tuple(hosts), roles=frozen(roles),
                 secret_files=tuple(secret_files), redactor=redactor, tasks=frozen(tasks))


def _origin_index(origins: Mapping[str, str]) -> dict[str, str]:
    """Every dotted prefix -> the origin of the first key under it, built once (linear, not per lookup)."""
    index: dict[str, str] = {}
    for key, origin in origins.items():
        for m in re.finditer(r"[.\[]", key):
            index.setdefault(key[:m.start()], origin)
    return index


def _roles(settings: dict, where_of, errors: list[str]) -> dict[str, Role]:
    configured = settings.get("roles") or {}
    sequences = settings.get("sequences") or {}
    roles: dict[str, Role] = {}
    for name in list(DEFAULT_SEQUENCES) + [r for r in configured if r not in DEFAULT_SEQUENCES]:
        spec = configured.get(name) or {}
        if name in sequences:
            seq = sequences[name]
        elif spec.get("sequence") is not None:
            seq = spec["sequence"]
        elif name in DEFAULT_SEQUENCES:
            seq = DEFAULT_SEQUENCES[name]
        else:
            errors.append(f"{where_of(f'roles.{name}')}: roles.{name}.sequence: a custom role needs "
                          "its list of steps, e.g. `sequence: [bundle, restart_puma]`")
            seq = ()
        gated = spec.get("gated")
        if gated is None:
            gated = DEFAULT_GATED.get(name, False)
        roles[name] = Role(name=name, gated=bool(gated), sequence=tuple(str(s) for s in seq))
    for name in sequences:
        if name not in roles:
            errors.append(f"{where_of(f'sequences.{name}')}: sequences.{name}: unknown role '{name}'"
                          f"{validate.suggest(name, roles)}; known: {', '.join(roles)}")
    return roles


def _tasks(settings: dict, root: Path, where_of, errors: list[str]) -> dict:
    """The steps written in Python, from the ``tasks`` modules beside stages/ (inventory/tasks.py)."""
    try:
        return load_tasks(settings.get("tasks"), root.parent, STEP_ORDER, where_of("tasks"))
    except ConfigError as e:
        errors.append(e.message)
        return {}


def _check_steps(settings: dict, roles: dict[str, Role], tasks: dict, where_of, errors: list[str]) -> None:
    steps = settings.get("steps") or {}
    known = set(STEP_ORDER) | set(steps) | set(tasks)
    for name, spec in steps.items():
        spec = spec or {}
        if spec.get("always") is not None and name not in SKIPPING_STEPS:
            errors.append(f"{where_of(f'steps.{name}')}: steps.{name}.always: only "
                          f"{' and '.join(SKIPPING_STEPS)} skip work (the others always run); remove it")
        if name in STEP_ORDER:
            for key in ("roles", "after"):
                if spec.get(key) is not None:
                    errors.append(f"{where_of(f'steps.{name}')}: steps.{name}.{key}: only custom steps "
                                  f"take '{key}'; built-in steps follow their role sequences")
            continue
        if not spec.get("run") and name not in tasks:
            errors.append(f"{where_of(f'steps.{name}')}: steps.{name}: unknown step"
                          f"{validate.suggest(name, list(STEP_ORDER) + list(tasks))}; a custom step needs `run:` "
                          "(or a task of that name in a `tasks` module)")
        for role in spec.get("roles") or []:
            if role not in roles:
                errors.append(f"{where_of(f'steps.{name}')}: steps.{name}.roles: unknown role '{role}'"
                              f"{validate.suggest(role, roles)}; known: {', '.join(roles)}")
        after = spec.get("after")
        if after is not None and after not in known:
            errors.append(f"{where_of(f'steps.{name}')}: steps.{name}.after: unknown step '{after}'"
                          f"{validate.suggest(after, known)}")
    for role in roles.values():
        source = f"sequences.{role.name}" if role.name in (settings.get("sequences") or {}) \
            else f"roles.{role.name}.sequence"
        for i, step in enumerate(role.sequence):
            if step not in known:
                errors.append(f"{where_of(source)}: {source}[{i}]: unknown step '{step}'"
                              f"{validate.suggest(step, known)}; known: {', '.join(sorted(known))}")


def _check_checks(settings: dict, roles: dict[str, Role], where_of, errors: list[str]) -> None:
    """A check is an HTTP check (``url``) or a command check (``run``), never both; its roles exist."""
    for name, spec in (settings.get("checks") or {}).items():
        spec = spec or {}
        where = where_of(f"checks.{name}")
        if (not spec.get("url")) == (spec.get("run") is None):
            errors.append(f"{where}: checks.{name}: give either `url:` (an HTTP check) or `run:` (a command "
                          "check), not both or neither")
        elif spec.get("run") is not None:
            for key in ("contains", "status"):
                if spec.get(key) is not None:
                    errors.append(f"{where}: checks.{name}.{key}: only HTTP checks (`url:`) take '{key}'")
        for role in spec.get("roles") or []:
            if role not in roles:
                errors.append(f"{where}: checks.{name}.roles: unknown role '{role}'"
                              f"{validate.suggest(role, roles)}; known: {', '.join(roles)}")


def expand_range(name: str) -> list[tuple[str, int | None]]:
    """``newton-[01:20]`` -> [("newton-01", 1), ...]; a plain name -> [(name, None)].

    Raises ``BadRange`` for brackets that are not one numeric range (``web-[a:c]``, ``web-[1-3]``).
    """
    m = _RANGE.match(name)
    if not m:
        if "[" in name or "]" in name:
            raise BadRange(f"'{name}' is not a host name or a range; a range is [low:high] with numbers, "
                           "e.g. web-[01:20]")
        return [(name, None)]
    lo_text, hi_text = m.group("lo"), m.group("hi")
    lo, hi = int(lo_text), int(hi_text)
    if hi - lo >= MAX_RANGE:
        raise BadRange(f"[{lo_text}:{hi_text}] expands to {hi - lo + 1} hosts; at most {MAX_RANGE} per entry")
    width = len(lo_text) if lo_text.startswith("0") else 0
    return [(f"{m.group('head')}{str(n).zfill(width)}{m.group('tail')}", n) for n in range(lo, hi + 1)]


def _hosts(settings: dict, roles: dict[str, Role], overrides: Mapping[str, Any], where_of,
           stage_where: str, errors: list[str], empty: Mapping[str, str] = {}) -> list[Host]:
    entries = settings.get("hosts") or {}
    for entry, where in empty.items():
        if entry not in entries:  # no file gave it any setting (the merge keeps no null)
            errors.append(f"{where}: hosts.{entry}: no settings; give at least its roles, e.g. "
                          f"`{entry}: {{address: 10.0.0.1, roles: [kepler]}}`")
    if not entries and not empty:
        errors.append(f"{stage_where}: hosts: the stage has no hosts; add at least one under `hosts:`, "
                      "e.g. `kepler-1: {address: 10.0.0.1, roles: [kepler]}`")
        return []
    hosts: list[Host] = []
    seen: dict[str, str] = {}
    for entry, spec in entries.items():
        spec = spec or {}
        where = where_of(f"hosts.{entry}")
        try:
            expanded = expand_range(str(entry))
        except BadRange as e:
            errors.append(f"{where}: hosts.{entry}: {e}")
            continue
        if not expanded:
            errors.append(f"{where}: hosts.{entry}: empty range; write [low:high] with low <= high")
        host_roles = spec.get("roles")
        if not host_roles:
            errors.append(f"{where}: hosts.{entry}.roles: missing; give one or more of {', '.join(roles)}")
            continue
        for i, role in enumerate(host_roles):
            if role not in roles:
                errors.append(f"{where}: hosts.{entry}.roles[{i}]: unknown role '{role}'"
                              f"{validate.suggest(role, roles)}; known: {', '.join(roles)}")
        for name, n in expanded:
            if name in seen:
                errors.append(f"{where}: hosts.{entry}: duplicate host name '{name}' "
                              f"(also from hosts.{seen[name]}); host names must be unique")
                continue
            seen[name] = str(entry)
            try:
                hosts.append(_host(name, n, spec, settings, overrides))
            except _BadTemplate as e:  # named once, where the template is: the stage's `path` or this entry
                dotted = f"hosts.{entry}.{e.setting}" if spec.get(e.setting) is not None else e.setting
                line = f"{where_of(dotted)}: {dotted}: {e}"
                if line not in errors:
                    errors.append(line)
    _check_keys(hosts, entries, where_of, errors)
    return hosts


def key_problem(path: str) -> str | None:
    """Why a private key file cannot be used, in ssh's terms; None when it can (or does not exist yet).

    A missing file is left to the connect step (a CI job may plan without keys); a
    folder, or a key group/others can read (which OpenSSH refuses), is an error now.
    """
    full = Path(os.path.expanduser(path))
    try:
        st = full.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot read key file {path}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"key file {path} is a folder; name the private key file in it, e.g. {path.rstrip('/')}/id_ed25519"
    if st.st_mode & 0o077 and st.st_uid == os.getuid():  # OpenSSH's own rule (sshkey_perm_ok)
        return (f"key file {path} can be read by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"ssh refuses such keys: chmod 600 {path}")
    return None


def _check_keys(hosts: list[Host], entries: Mapping, where_of, errors: list[str]) -> None:
    seen: set[str] = set()
    for host in hosts:
        if not host.key or host.key in seen:
            continue
        seen.add(host.key)
        problem = key_problem(str(host.key))
        if problem:
            entry = next((e for e in entries if (entries[e] or {}).get("key") == host.key), None)
            dotted = f"hosts.{entry}.key" if entry is not None else "key"
            errors.append(f"{where_of(dotted)}: {dotted}: {problem}")


def _host(name: str, n: int | None, spec: dict, settings: dict, overrides: Mapping[str, Any]) -> Host:
    def pick(key: str) -> Any:
        if overrides.get(key) is not None:
            return overrides[key]
        return spec[key] if spec.get(key) is not None else settings.get(key)

    variables = dict(settings.get("vars") or {})
    variables.update(spec.get("vars") or {})
    variables.update(app=settings.get("app"), name=name, n=n if n is not None else "")
    env = dict(settings.get("env") or {})
    env.update(spec.get("env") or {})
    return Host(
        name=name, address=_filled("address", str(spec.get("address") or name), variables),
        roles=tuple(spec["roles"]), port=int(pick("port") or 22), user=pick("user"), key=pick("key"),
        path=_filled("path", str(pick("path")), variables), branch=str(pick("branch")),
        prefix=pick("prefix"), vars=frozen(variables), env=frozen({k: str(v) for k, v in env.items()}),
    )


def _fill(text: str, variables: Mapping[str, Any]) -> str:
    return fill_plain(text, variables) if "{" in text else text


class _BadTemplate(ValueError):
    """A host's ``address`` or ``path`` template that cannot be filled; ``setting`` names which."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


def _filled(setting: str, text: str, variables: Mapping[str, Any]) -> str:
    try:
        return _fill(text, variables)
    except (KeyError, IndexError) as e:
        raise _BadTemplate(setting, f"template names an unknown variable {e}; known: app, name, n and the keys "
                                    "of vars") from None
    except ValueError as e:
        raise _BadTemplate(setting, f"bad template: {e}") from None


def _secret_files(settings: dict, root: Path, environ: Mapping[str, str], where_of,
                  errors: list[str]) -> tuple[list[SecretFile], list[str]]:
    files: list[SecretFile] = []
    fragments: list[str] = []
    for i, spec in enumerate(settings.get("secrets") or []):
        key = f"secrets[{i}]"
        where = where_of("secrets")
        local, template, remote = spec.get("local"), spec.get("template"), spec.get("remote")
        if bool(local) == bool(template):
            errors.append(f"{where}: {key}: give exactly one of `local:` or `template:`")
            continue
        if not remote:
            errors.append(f"{where}: {key}.remote: missing; name the destination, e.g. `remote: config.rb`")
            continue
        source = Path(str(local or template)).expanduser()
        full = source if source.is_absolute() else root / source
        field_name = "local" if local else "template"
        if full.is_dir():
            errors.append(f"{where}: {key}.{field_name}: '{source}' is a folder "
                          f"({yamlfile.display_path(full)}); name the secret file itself")
            continue
        if not full.is_file():
            errors.append(f"{where}: {key}.{field_name}: secret file '{source}' not found "
                          f"(looked for {yamlfile.display_path(full)}); create it or fix the path")
            continue
        try:
            if template:
                text = yamlfile.read_text(full, "secret template")
                used = layers.references(text)
                text = layers.substitute(text, environ)
                fragments.extend(environ[v] for v in used if v in environ)
                content = text.encode()
            else:
                content = full.read_bytes()  # uploaded as-is: a binary certificate stays byte for byte
                text = content.decode("utf-8", errors="replace")
        except ConfigError as e:
            errors.append(f"{where}: {key}.{field_name}: {e}")
            continue
        except OSError as e:
            errors.append(f"{where}: {key}.{field_name}: cannot read {yamlfile.display_path(full)}: {e.strerror}")
            continue
        except layers.UnsetVariable as e:
            errors.append(f"{where}: {key}.template: {source} uses environment variable {e.name}, "
                          "which is not set; export it before deploying")
            continue
        except layers.BadReference as e:
            errors.append(f"{where}: {key}.template: {source}: {e}")
            continue
        _warn_if_readable(full, f"{where}: {key}.{field_name}")
        mode = int(str(spec.get("mode") or "0600"), 8)  # the schema's `mode` rule checked the form
        fragments.extend(secret_fragments(text))
        files.append(SecretFile(source=str(source), remote=str(remote), mode=mode, content=content))
    return files, fragments


def _warn_if_readable(path: Path, where: str) -> None:
    """A secret file that group or others can read on this machine is worth a warning (it stops nothing: the
    host gets the file with its own mode; but the secret is exposed here)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        shown = yamlfile.display_path(path)
        warnings.warn(f"{where}: {shown} can be read by others (mode {mode:04o}) and holds a secret; "
                      f"chmod 600 {shown}", PampaWarning, stacklevel=2)


_PUBLIC_SETTINGS = ("app", "branch", "path", "user", "key", "lock.path", "ssh.known_hosts", "ssh.config")


def _public_words(name: str, settings: dict, hosts: list[Host], roles: Mapping,
                  secret_files: list[SecretFile]) -> list[str]:
    """Names the operator must read and that are never secret: masking skips them (see redact.py)."""
    words = [name, *roles, *STEP_ORDER, *(settings.get("steps") or {})]
    for dotted in _PUBLIC_SETTINGS:
        node: Any = settings
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and not isinstance(node, yamlfile.Secret):
            words.append(node)
    for host in hosts:
        words += [host.name, host.address, host.user or "", host.path, host.branch, host.key or ""]
        for group in ("puma", "processes", "workers"):
            for unit in (settings.get("units") or {}).get(group) or []:
                try:
                    words.append(_fill(str(unit), host.vars))
                except (KeyError, IndexError, ValueError):
                    pass  # reported by the plan, which names the setting
    for f in secret_files:
        words += [f.source, f.remote, os.path.basename(f.source), os.path.basename(f.remote)]
    return [w for w in words if w and not isinstance(w, yamlfile.Secret)]


def _secret_values(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for item in node.values() for v in _secret_values(item)]
    if isinstance(node, list):
        return [v for item in node for v in _secret_values(item)]
    return [str(node)] if isinstance(node, yamlfile.Secret) else []
