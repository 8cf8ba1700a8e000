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
        path.write_bytes(textwrap.dedent(text).encode("utf-8", errors="surrogateescape"))
    return stages


def run_plan(tmp_path, monkeypatch, capsys, stage="production", env=None):
    env = {"AP_URL": "ap.example.com:8750", **(env or {})}
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
     "stages/production.yml: hosts.kepler-1.roles[0]: unknown role 'keplr' (did you mean 'kepler'?); "
     "known: kepler, euler, newton, copernico"),
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
    # Every value is validated where it is read, with the words the command line uses.
    ("letter range", {"production.yml": GOOD + "  web-[a:c]: {roles: [newton]}\n"},
     "stages/production.yml: hosts.web-[a:c]: 'web-[a:c]' is not a host name or a range; "
     "a range is [low:high] with numbers"),
    ("dash range", {"production.yml": GOOD + "  web-[1-3]: {roles: [newton]}\n"},
     "hosts.web-[1-3]: 'web-[1-3]' is not a host name or a range"),
    ("huge range", {"production.yml": GOOD + "  web-[1:100000]: {roles: [newton]}\n"},
     "hosts.web-[1:100000]: [1:100000] expands to 100000 hosts; at most 10000 per entry"),
    ("unclosed variable", {"production.yml": GOOD + "env: {DB: '${UNCLOSED'}\n"},
     "stages/production.yml: env.DB: '${UNCLOSED' is not a variable reference; write ${NAME}"),
    ("bad variable name", {"production.yml": GOOD + "env: {DB: '${1DB}'}\n"},
     "env.DB: '${1DB}' is not a variable reference"),
    ("zero parallel", {"production.yml": GOOD + "parallel: 0\n"},
     "stages/production.yml: parallel: expected a positive number, got 0"),
    ("negative connect timeout", {"production.yml": GOOD + "ssh: {connect_timeout: -1}\n"},
     "ssh.connect_timeout: expected a positive number, got -1"),
    ("zero step timeout", {"production.yml": GOOD + "steps: {bundle: {timeout: 0}}\n"},
     "steps.bundle.timeout: expected a positive number, got 0"),
    ("negative retries", {"production.yml": GOOD + "ssh: {connect_retries: -2}\n"},
     "ssh.connect_retries: expected a number of 0 or more, got -2"),
    ("zero lease", {"production.yml": GOOD + "lock: {lease: 0}\n"},
     "lock.lease: expected a number of seconds of at least 1, got 0"),
    ("zero ap timeout", {"production.yml": GOOD + "access_point: {url: 'http://ap', timeout: 0}\n"},
     "access_point.timeout: expected a positive number, got 0"),
    ("port out of range", {"production.yml": GOOD + "port: 70000\n"},
     "stages/production.yml: port: expected a port number from 1 to 65535, got 70000"),
    ("host port zero", {"production.yml": GOOD.replace("roles: [kepler]", "roles: [kepler], port: 0")},
     "hosts.kepler-1.port: expected a port number from 1 to 65535, got 0"),
    ("code path is the home folder", {"production.yml": GOOD + "path: '~'\n"},
     "stages/production.yml: path: expected a folder of its own such as ~/code/{app}, not ~, / or . "
     "(the revision log is written next to it, as PATH.revisions.jsonl), got '~'"),
    ("host code path ends in the home folder's slash",
     {"production.yml": GOOD.replace("roles: [kepler]", "roles: [kepler], path: '~/'")},
     "stages/production.yml: hosts.kepler-1.path: expected a folder of its own such as ~/code/{app}"),
    ("code path is the root", {"production.yml": GOOD + "path: /\n"}, "path: expected a folder of its own"),
    ("code path is the current folder", {"production.yml": GOOD + "path: ./\n"}, "path: expected a folder of its own"),
    ("env key not a shell name", {"production.yml": GOOD + "env: {'RACK-ENV': production}\n"},
     "stages/production.yml: env: 'RACK-ENV' is not a valid environment variable name"),
    ("host env key", {"production.yml": GOOD.replace("roles: [kepler]", "roles: [kepler], env: {'a b': 1}")},
     "hosts.kepler-1.env: 'a b' is not a valid environment variable name"),
    ("mode as a YAML integer", {"production.yml": GOOD + "secrets: [{local: s.rb, remote: s.rb, mode: 0600}]\n",
                                "s.rb": "x\n"},
     "secrets[0].mode: expected an octal mode in quotes such as '0600' (unquoted, YAML reads 0600 as "
     "the number 384), got 384"),
    ("mode not octal", {"production.yml": GOOD + "secrets: [{local: s.rb, remote: s.rb, mode: '0900'}]\n",
                        "s.rb": "x\n"},
     "secrets[0].mode: expected an octal mode in quotes such as '0600'"),
    ("secret path is a folder", {"production.yml": GOOD + "secrets: [{local: secrets, remote: config.rb}]\n",
                                 "secrets/config.rb": "x\n"},
     "stages/production.yml: secrets[0].local: 'secrets' is a folder (stages/secrets); name the secret file"),
    ("secret template unclosed", {"production.yml": GOOD + "secrets: [{template: t.tmpl, remote: c.rb}]\n",
                                  "t.tmpl": "key = '${UNCLOSED'\n"},
     "secrets[0].template: t.tmpl: '${UNCLOSED' is not a variable reference"),
    ("unknown name in units.restart", {"production.yml": GOOD + "units: {restart: 'systemctl restart {unitt}'}\n"},
     "stages/production.yml: units.restart: unknown variable {unitt}; known: "),
    ("unknown name in a unit", {"production.yml": GOOD + "units: {puma: ['{ap}_app']}\n"},
     "stages/production.yml: units.puma: unknown variable {ap}"),
    ("recursive alias", {"production.yml": GOOD + "vars: &v\n  a: *v\n"},
     "stages/production.yml:6:7: an alias refers to the value that contains it"),
    ("not UTF-8", {"production.yml": GOOD + "branch: caf\udce9\n"},
     "stages/production.yml:6: not UTF-8 text (byte 0xe9); save the file as UTF-8"),
    ("list as a key", {"production.yml": GOOD + "vars: {? [a, b] : 1}\n"},
     "stages/production.yml:6:10: YAML syntax error: a key must be a name or a number, not a list"),
    ("huge format width", {"production.yml": GOOD + "steps: {bundle: {run: 'x {app:>999999999}'}}\n"},
     "steps.bundle.run: bad template 'x {app:>999999999}': format width 999999999"),
    ("no repo", {"production.yml": GOOD.replace("repo: git@example.com:shop.git\n", "")},
     "stages/production.yml: repo: missing; set the git URL every host fetches from"),
    # Issue 22: every key added since is checked where it is read too, with the same rule table.
    ("access point url without a scheme", {"production.yml": GOOD + "access_point: {url: not a url}\n"},
     "stages/production.yml: access_point.url: expected an http:// or https:// URL with a host, such as "
     "https://ap.example.com (empty: none), got 'not a url': it has no http:// or https:// in front"),
    ("access point url from the environment", {"production.yml": GOOD + "access_point: {url: '${AP_URL}'}\n"},
     "access_point.url: expected an http:// or https:// URL with a host, such as https://ap.example.com "
     "(empty: none), got 'ap.example.com:8750': it has no http:// or https:// in front"),
    ("access point url without a host", {"production.yml": GOOD + "access_point: {url: 'https:///api'}\n"},
     "access_point.url: expected an http:// or https:// URL with a host, such as https://ap.example.com "
     "(empty: none), got 'https:///api': it has no host after the scheme"),
    ("check url not http", {"production.yml": GOOD + "checks: {web: {url: 'ftp://{address}/'}}\n"},
     "checks.web.url: expected an http:// or https:// URL with a host, such as https://ap.example.com (empty: "
     "none), got 'ftp://{address}/': its scheme is 'ftp', not http or https"),
    ("host name with a slash", {"production.yml": GOOD + "  kepler/2: {roles: [kepler]}\n"},
     "stages/production.yml: hosts: 'kepler/2' is not a valid host name; expected names made of letters, digits, "
     "'.', '_' and '-' that start with a letter or digit (a host's name is also a file name and part of a URL)"),
    ("host name with a space in a range", {"production.yml": GOOD + "  'web [1:2]': {roles: [newton]}\n"},
     "hosts: 'web [1:2]' is not a valid host name"),
    ("host without settings", {"production.yml": "app: shop\nrepo: r\nhosts:\n  k-1:\n"},
     "stages/production.yml: hosts.k-1: no settings; give at least its roles, e.g. "
     "`k-1: {address: 10.0.0.1, roles: [kepler]}`"),
    ("unknown variable in the stage's path", {"production.yml": GOOD + "path: '~/code/{nope}'\n"},
     "stages/production.yml: path: template names an unknown variable 'nope'; known: app, name, n and the keys of vars"),
    ("unknown variable in a host's address", {"production.yml": GOOD.replace("10.0.1.{n}", "10.0.1.{m}")},
     "stages/production.yml: hosts.newton-[01:03].address: template names an unknown variable 'm'"),
    ("negative check retries", {"production.yml": GOOD + "checks: {web: {run: 'true', retries: -1}}\n"},
     "checks.web.retries: expected a number of 0 or more, got -1"),
    ("zero check timeout", {"production.yml": GOOD + "checks: {web: {run: 'true', timeout: 0}}\n"},
     "checks.web.timeout: expected a positive number, got 0"),
    ("zero check interval", {"production.yml": GOOD + "checks: {web: {run: 'true', interval: 0}}\n"},
     "checks.web.interval: expected a positive number, got 0"),
    ("negative check delay", {"production.yml": GOOD + "checks: {web: {run: 'true', delay: -3}}\n"},
     "checks.web.delay: expected a number of 0 or more, got -3"),
    ("check status out of range", {"production.yml": GOOD + "checks: {web: {url: 'http://{address}/', status: 2000}}\n"},
     "checks.web.status: expected an HTTP status from 100 to 599, got 2000"),
    ("negative hooks timeout", {"production.yml": GOOD + "hooks: {timeout: -1}\n"},
     "stages/production.yml: hooks.timeout: expected a positive number, got -1"),
    ("negative notify timeout", {"production.yml": GOOD + "notify: {timeout: -2}\n"},
     "stages/production.yml: notify.timeout: expected a positive number, got -2"),
    ("negative free disk", {"production.yml": GOOD + "check: {min_free_mb: -5}\n"},
     "stages/production.yml: check.min_free_mb: expected a number of 0 or more, got -5"),
    # Paths meant to stay inside the deploy folder refuse .. and absolute paths (rm -rf runs on them).
    ("shared dir escaping the release", {"production.yml": GOOD + "shared_dirs: [log, ../../etc]\n"},
     "stages/production.yml: shared_dirs[1]: expected a path inside the release such as log or tmp/pids: not "
     "absolute, no ~ and no .. (each one is replaced by a link in every release), got '../../etc'"),
    ("absolute shared file", {"production.yml": GOOD + "shared_files: [/etc/passwd]\n"},
     "shared_files[0]: expected a path inside the release such as log or tmp/pids"),
    ("shared dir that is the release", {"production.yml": GOOD + "shared_dirs: [./]\n"},
     "shared_dirs[0]: expected a path inside the release"),
    ("relative secret destination escaping", {"production.yml": GOOD + "secrets: [{local: s.rb, remote: ../x.rb}]\n",
                                              "s.rb": "x\n"},
     "secrets[0].remote: expected a file: absolute, ~/..., or relative to the code path without .. (a relative "
     "one is linked into every release), got '../x.rb'"),
]

WEBHOOK = "hooks.slack.com/services/T0000/B0000/XXXXsecretXXXX"


@pytest.mark.parametrize("how", ["inline", "environment", "tagged"])
def test_a_webhook_without_a_scheme_is_one_line_that_never_shows_it(tmp_path, monkeypatch, capsys, how):
    """Issue 22: a scheme-less webhook URL made every deploy exit 70 and printed the secret URL."""
    value = {"inline": WEBHOOK, "environment": "'${SLACK_URL}'", "tagged": "!secret " + WEBHOOK}[how]
    write(tmp_path, {"production.yml": GOOD + f"notify: {{webhooks: ['https://ok.example/x', {value}]}}\n"})
    code, out = run_plan(tmp_path, monkeypatch, capsys, env={"SLACK_URL": WEBHOOK})
    assert code == 2
    assert out.err.strip() == ("pampa: error: stages/production.yml: notify.webhooks[1]: expected an http:// or "
                               "https:// URL with a host, such as https://ap.example.com (empty: none), but it has "
                               "no http:// or https:// in front (the value is not shown: it is a secret)")
    assert "XXXXsecret" not in out.err + out.out


def test_an_unset_variable_is_said_once_not_judged_again(tmp_path, monkeypatch, capsys):
    write(tmp_path, {"production.yml": GOOD + "access_point: {url: '${PAMPA_UNSET_URL}'}\n"
                                              "notify: {webhooks: ['${PAMPA_UNSET_HOOK}']}\n"})
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert [line.split(": ")[3] for line in out.err.strip().splitlines()] == \
        ["access_point.url", "notify.webhooks[0]"]
    assert "is not set" in out.err and "expected an http" not in out.err


def test_an_empty_url_means_none(tmp_path, monkeypatch):
    """`url: ${PAMPA_AP_URL:-}` (the seed's common.yml) and an empty webhook are no access point, no webhook."""
    write(tmp_path, {"production.yml": GOOD + "access_point: {url: '${NOPE_URL:-}'}\nnotify: {webhooks: ['']}\n"})
    monkeypatch.chdir(tmp_path)
    from pampa_deployer.engine.around.notify import Notifier
    stage = load_stage("production")
    assert stage.access_point.url == "" and Notifier.from_stage(stage) is None


def test_a_template_error_in_path_is_named_once(tmp_path, monkeypatch, capsys):
    """Issue 22: a bad `{name}` in the stage's `path` was blamed on every host entry."""
    write(tmp_path, {"common.yml": "path: '~/code/{nope}'\n", "production.yml": GOOD})
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert out.err.strip() == ("pampa: error: stages/common.yml: path: template names an unknown variable 'nope'; "
                               "known: app, name, n and the keys of vars")


def test_the_reference_shows_the_new_rules():
    """The generated configuration reference names each rule where its key is listed."""
    from pampa_deployer.inventory.reference import table
    rows = {line.split("|")[1].strip(" `"): line for line in table().splitlines()[2:]}
    for key, words in [("access_point.url", "Expects an http:// or https:// URL with a host"),
                       ("notify.webhooks", "Expects an http:// or https:// URL"),
                       ("checks.<name>.url", "Expects an http:// or https:// URL"),
                       ("hosts", "Expects names made of letters, digits"),
                       ("shared_dirs", "Expects a path inside the release"),
                       ("shared_files", "Expects a path inside the release"),
                       ("secrets[].remote", "Expects a file: absolute, ~/..., or relative"),
                       ("checks.<name>.retries", "Expects a number of 0 or more"),
                       ("checks.<name>.interval", "Expects a positive number"),
                       ("checks.<name>.timeout", "Expects a positive number"),
                       ("checks.<name>.delay", "Expects a number of 0 or more"),
                       ("checks.<name>.status", "Expects an HTTP status from 100 to 599"),
                       ("hooks.timeout", "Expects a positive number"),
                       ("notify.timeout", "Expects a positive number"),
                       ("check.min_free_mb", "Expects a number of 0 or more")]:
        assert words in rows[key], key


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
    from pampa_deployer.inventory.settings import VIEWS

    for section, cls in VIEWS.items():
        assert [f.name for f in fields(cls)] == list(schema.TOP[section].children), section
    st = stage_from_mapping({"app": "a", "repo": "r", "hosts": {"e1": {"roles": ["euler"]},
                                                                 "k1": {"roles": ["kepler"]}},
                             "lock": {"lease": 30}}, environ={})
    assert st.lock.lease == 30.0 and st.lock.path == schema.TOP["lock"].children["path"].default
    assert st.ssh.connect_timeout == schema.TOP["ssh"].children["connect_timeout"].default
    assert st.access_point.url is None and st.access_point.timeout == 5.0
    assert st.parallel == 32 and st.lock_host.name == "k1"
    for section, cls in VIEWS.items():  # each section's view is a property of the stage, defaults from the schema
        for f in fields(cls):
            if section != "lock" or f.name != "lease":
                assert getattr(getattr(st, section), f.name) == schema.TOP[section].children[f.name].default


def test_yaml_merge_keys_and_x_anchors(tmp_path, monkeypatch):
    """``<<: *defaults`` works as in Rails and Kamal files; keys written in place win; x-* keys hold anchors."""
    write(tmp_path, {"production.yml": """\
        x-web: &web {roles: [newton], port: 2222, user: deploy}
        app: shop
        hosts:
          kepler-1: {address: 10.0.0.1, roles: [kepler]}
          web-1: {<<: *web, address: 10.0.1.1}
          web-2: {<<: *web, address: 10.0.1.2, port: 2200}
        """})
    monkeypatch.chdir(tmp_path)
    stage = load_stage("production")
    assert (stage.host("web-1").port, stage.host("web-1").user, stage.host("web-1").roles) == (2222, "deploy",
                                                                                                ("newton",))
    assert stage.host("web-2").port == 2200
    assert "x-web" not in stage.settings


def test_merge_key_does_not_hide_real_duplicates(tmp_path, monkeypatch, capsys):
    write(tmp_path, {"production.yml": GOOD + "  web-1: {<<: {port: 1}, roles: [newton], roles: [euler]}\n"})
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2 and "duplicate key 'roles'" in out.err


def test_alias_bomb_is_refused_quickly(tmp_path, monkeypatch, capsys):
    """A billion-laughs file under ``vars`` is refused before it is expanded (memory stays flat)."""
    lines = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    write(tmp_path, {"production.yml": GOOD + "vars:\n" + "\n".join(lines) + "\n"})
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert "more than 200,000 values once aliases are expanded" in out.err


def test_oversized_stage_file_is_refused(tmp_path, monkeypatch, capsys):
    write(tmp_path, {"production.yml": GOOD + "# " + "x" * (1024 * 1024) + "\n"})
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert "stages/production.yml: 1024 KiB is too large for a stage file (limit 1024 KiB)" in out.err


def test_symlink_loop_is_a_config_error(tmp_path, monkeypatch, capsys):
    stages = write(tmp_path, {"staging.yml": GOOD})
    (stages / "production.yml").symlink_to("production.yml")
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert out.err.strip() == "pampa: error: stages/production.yml: cannot read: symbolic link loop; fix the link"


@pytest.mark.parametrize("mode,expected", [(0o644, "keys/deploy can be read by others (mode 0644); ssh refuses such keys: "
                                                   "chmod 600 keys/deploy"),
                                           (0o640, "keys/deploy can be read by others (mode 0640)"), (0o600, None)])
def test_key_file_permissions(tmp_path, monkeypatch, capsys, mode, expected):
    write(tmp_path, {"production.yml": GOOD + "key: keys/deploy\n"})
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "deploy").write_text("not really a key\n")
    (tmp_path / "keys" / "deploy").chmod(mode)
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    if expected is None:
        assert code == 0, out.err
    else:
        assert code == 2
        assert f"pampa: error: stages/production.yml: key: key file {expected}" in out.err


def test_key_file_that_is_a_folder(tmp_path, monkeypatch, capsys):
    write(tmp_path, {"production.yml": GOOD.replace("roles: [kepler]", "roles: [kepler], key: keys")})
    (tmp_path / "keys").mkdir()
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert ("stages/production.yml: hosts.kepler-1.key: key file keys is a folder; name the private key "
            "file in it, e.g. keys/id_ed25519") in out.err


def test_dollar_dollar_is_a_literal(tmp_path, monkeypatch):
    write(tmp_path, {"production.yml": GOOD + "env: {PS: '$${HOME}'}\n"})
    monkeypatch.chdir(tmp_path)
    assert load_stage("production").host("kepler-1").env["PS"] == "${HOME}"


def test_binary_local_secret_is_uploaded_byte_for_byte(tmp_path, monkeypatch):
    stages = write(tmp_path, {"production.yml": GOOD + "secrets: [{local: cert.der, remote: cert.der}]\n"})
    (stages / "cert.der").write_bytes(b"\x30\x82\xff\x00binary")
    monkeypatch.chdir(tmp_path)
    assert load_stage("production").secret_files[0].content == b"\x30\x82\xff\x00binary"


def test_dates_in_vars_print_in_config(tmp_path, monkeypatch, capsys):
    write(tmp_path, {"production.yml": GOOD + "vars: {since: 2024-01-01}\n"})
    monkeypatch.chdir(tmp_path)
    assert main(["config", "production"]) == 0
    assert '"2024-01-01"' in capsys.readouterr().out


@pytest.mark.parametrize("path", ["~/code/shop", "~/code/shop/", "/srv/shop", "shop", "~/.shop", "~/code/{app}"])
def test_code_paths_that_name_a_folder_of_their_own_are_accepted(path):
    from pampa_deployer.inventory.validate import rule_problem
    assert rule_problem("code_path", path, "path") is None


def test_yaml_null_code_path_means_the_default(tmp_path, monkeypatch):
    """`path: ~` is YAML's null, not the home folder: the default code path applies."""
    write(tmp_path, {"production.yml": GOOD + "path: ~\n"})
    monkeypatch.chdir(tmp_path)
    assert load_stage("production").hosts[0].path == "~/code/shop"


def test_a_secret_file_others_can_read_gets_one_warning(tmp_path, monkeypatch, capsys):
    """Issue 22: a secret file readable by others got no warning. It stops nothing (exit 0), and says once
    which file, why and what to do."""
    stages = write(tmp_path, {"production.yml": GOOD + "secrets: [{local: s.rb, remote: s.rb}]\n", "s.rb": "K = 'v'\n"})
    (stages / "s.rb").chmod(0o644)
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 0
    assert out.err == ("pampa: warning: stages/production.yml: secrets[0].local: stages/s.rb can be read by others "
                       "(mode 0644) and holds a secret; chmod 600 stages/s.rb\n")
    (stages / "s.rb").chmod(0o600)
    code, out = run_plan(tmp_path, monkeypatch, capsys)
    assert code == 0 and out.err == ""
