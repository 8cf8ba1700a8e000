"""Inventory loading and validation: every bad input is one path-qualified line, exit 2, no traceback."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pampa_deployer.cli import main
from pampa_deployer.errors import ConfigErrors
from pampa_deployer.inventory import expand_range, load_stage
from pampa_deployer.inventory.yamlfile import Secret

GOOD = """\
app: shop
repo: git@example.com:shop.git
hosts:
  kepler-1: {address: 10.0.0.1, roles: [kepler]}
  newton-[01:03]: {address: "10.0.1.{n}", roles: [newton]}
"""


def write(tmp_path, files: dict[str, str]):
    stages = tmp_path / "stages"
    stages.mkdir(exist_ok=True)
    for name, text in files.items():
        path = stages / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return stages


def run_plan(tmp_path, monkeypatch, capsys, stage="production", env=None):
    monkeypatch.chdir(tmp_path)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    code = main(["plan", stage])
    return code, capsys.readouterr()


BAD = [
    ("yaml syntax", {"production.yml": "app: shop\nhosts: [unclosed\n"},
     r"stages/production.yml:3:1: YAML syntax error"),
    ("unknown key", {"production.yml": GOOD + "branhc: main\n"},
     "stages/production.yml: branhc: unknown key (did you mean 'branch'?)"),
    ("unknown nested key", {"production.yml": GOOD.replace("roles: [kepler]", "roles: [kepler], prot: 22")},
     "stages/production.yml: hosts.kepler-1.prot: unknown key (did you mean 'port'?)"),
    ("wrong type", {"production.yml": GOOD + "parallel: many\n"},
     "stages/production.yml: parallel: expected an integer, got 'many'"),
    ("unknown role", {"production.yml": GOOD.replace("roles: [kepler]", "roles: [keplr]")},
     "stages/production.yml: hosts.kepler-1.roles[0]: unknown role 'keplr' (did you mean 'kepler'?) "
     "(known: kepler, euler, newton, copernico)"),
    ("duplicate host key", {"production.yml": GOOD + "  kepler-1: {address: 10.0.0.9, roles: [kepler]}\n"},
     "stages/production.yml:6:3: duplicate key 'kepler-1'"),
    ("duplicate host from range", {"production.yml": GOOD + "  newton-02: {roles: [newton]}\n"},
     "stages/production.yml: hosts.newton-02: duplicate host name 'newton-02'"),
    ("empty stage", {"production.yml": "app: shop\n"},
     "stages/production.yml: hosts: the stage has no hosts"),
    ("empty file", {"production.yml": ""}, "stages/production.yml: the stage file is empty"),
    ("unset env var", {"production.yml": GOOD + "access_point: {url: 'http://ap', api_key: '${PAMPA_UNSET_KEY}'}\n"},
     "stages/production.yml: access_point.api_key: environment variable PAMPA_UNSET_KEY is not set"),
    ("missing secret file", {"production.yml": GOOD + "secrets: [{local: secrets/config.rb, remote: config.rb}]\n"},
     "stages/production.yml: secrets[0].local: secret file 'secrets/config.rb' not found"),
    ("unknown step in sequence", {"production.yml": GOOD + "sequences: {euler: [bundel]}\n"},
     "stages/production.yml: sequences.euler[0]: unknown step 'bundel' (did you mean 'bundle'?)"),
    ("unknown template variable", {"production.yml": GOOD + "steps: {bundle: {run: 'bundle install {jobz}'}}\n"},
     "stages/production.yml: steps.bundle.run: unknown variable {jobz}"),
    ("missing roles", {"production.yml": "app: shop\nhosts:\n  kepler-1: {address: 10.0.0.1}\n"},
     "stages/production.yml: hosts.kepler-1.roles: missing"),
    ("error in common", {"common.yml": "app: shop\nusr: deploy\n", "production.yml": GOOD},
     "stages/common.yml: usr: unknown key (did you mean 'user'?)"),
]


@pytest.mark.parametrize("name,files,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_inventory_is_one_clear_line(tmp_path, monkeypatch, capsys, name, files, expected):
    write(tmp_path, files)
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("pampa: error: ")
    assert expected in lines[0]
    assert "Traceback" not in out.err + out.out


def test_unknown_stage_lists_the_stages(tmp_path, monkeypatch, capsys):
    write(tmp_path, {"production.yml": GOOD, "staging.yml": GOOD, "common.yml": "branch: main\n"})
    code, out = run_plan(tmp_path, monkeypatch, capsys, stage="prodution")
    assert code == 2
    assert out.err.strip() == ("pampa: error: stages/: unknown stage 'prodution' (did you mean 'production'?); "
                               "stages that exist: production, staging")


def test_several_problems_are_all_reported(tmp_path, monkeypatch, capsys):
    write(tmp_path, {"production.yml": GOOD.replace("[kepler]", "[keplr]") + "parallel: x\nbranhc: y\n"})
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert len(out.err.strip().splitlines()) == 2  # schema errors first; roles are checked once those are fixed


def test_no_traceback_from_the_real_command(tmp_path):
    write(tmp_path, {"production.yml": GOOD.replace("[kepler]", "[keplr]")})
    result = subprocess.run([sys.executable, "-m", "pampa_deployer", "plan", "production"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    debug = subprocess.run([sys.executable, "-m", "pampa_deployer", "plan", "production", "--debug"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_merge_order_and_origins(tmp_path, monkeypatch):
    write(tmp_path, {
        "common.yml": "app: shop\nrepo: r\nbranch: develop\nport: 2200\nvars: {a: common, b: common}\n",
        "production.yml": "branch: main\nvars: {b: stage}\nhosts:\n"
                          "  k1: {roles: [kepler], port: 22, vars: {c: host}}\n  k2: {roles: [kepler]}\n",
    })
    monkeypatch.chdir(tmp_path)
    stage = load_stage("production", overrides={"branch": "hotfix"})
    k1, k2 = stage.hosts
    assert (k1.port, k2.port) == (22, 2200)  # host beats stage beats common
    assert k1.branch == "hotfix"  # the command line beats everything
    assert dict(k1.vars)["a"] == "common" and dict(k1.vars)["b"] == "stage" and dict(k1.vars)["c"] == "host"
    assert stage.origins["vars.a"] == "stages/common.yml"
    assert stage.origins["vars.b"] == "stages/production.yml"
    assert stage.origins["parallel"] == "default"
    assert k1.path == "~/code/shop"


def test_environment_values_and_secret_marking(tmp_path, monkeypatch):
    write(tmp_path, {"production.yml": GOOD + "env: {TOKEN: !secret 'tok-${CI_TOKEN}', RACK_ENV: '${RENV:-production}'}\n"
                                              "access_point: {url: 'http://ap', api_key: '${AP_KEY}'}\n"})
    monkeypatch.chdir(tmp_path)
    stage = load_stage("production", environ={"CI_TOKEN": "abc123", "AP_KEY": "key-xyz-1"})
    assert stage.setting("env.TOKEN") == "tok-abc123" and isinstance(stage.setting("env.TOKEN"), Secret)
    assert stage.setting("env.RACK_ENV") == "production"
    assert isinstance(stage.setting("access_point.api_key"), Secret)  # a secret-looking key
    assert stage.redactor.mask("tok-abc123 and key-xyz-1") == "******** and ********"


def test_range_expansion():
    assert [n for n, _ in expand_range("newton-[01:20]")][:2] == ["newton-01", "newton-02"]
    assert len(expand_range("newton-[01:20]")) == 20
    assert expand_range("web[8:10].dc") == [("web8.dc", 8), ("web9.dc", 9), ("web10.dc", 10)]
    assert expand_range("plain") == [("plain", None)]


def test_errors_are_collected_not_first_only(tmp_path, monkeypatch):
    write(tmp_path, {"production.yml": "app: s\nhosts:\n  a: {roles: [x]}\n  b: {roles: [y]}\n"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigErrors) as info:
        load_stage("production")
    assert len(info.value.messages) == 2


def test_settings_views_have_exactly_the_schema_keys_and_defaults():
    """Stage.ssh / .lock / .access_point: the schema is the only place a default is written."""
    from dataclasses import fields

    from pampa_deployer.inventory import schema, stage_from_mapping
    from pampa_deployer.inventory.settings import AccessPointView, LockView, SSHView, UnitsView

    for section, cls in (("ssh", SSHView), ("lock", LockView), ("access_point", AccessPointView),
                         ("units", UnitsView)):
        assert [f.name for f in fields(cls)] == list(schema.TOP[section].children), section
    st = stage_from_mapping({"app": "a", "repo": "r", "hosts": {"e1": {"roles": ["euler"]},
                                                                 "k1": {"roles": ["kepler"]}},
                             "lock": {"lease": 30}}, environ={})
    assert st.lock.lease == 30.0 and st.lock.path == schema.TOP["lock"].children["path"].default
    assert st.ssh.connect_timeout == schema.TOP["ssh"].children["connect_timeout"].default
    assert st.access_point.url is None and st.access_point.timeout == 5.0
    assert st.parallel == 32 and st.lock_host.name == "k1"
