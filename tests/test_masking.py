"""Masking hides every secret and nothing else: branch, paths, file names and server words stay readable."""
from __future__ import annotations

import textwrap

from pampa_deployer.cli import main
from pampa_deployer.inventory import load_stage
from pampa_deployer.plan import build_plan
from pampa_deployer.redact import EMPTY, MASK, Redactor, secret_fragments

STAGE = """\
app: shop
repo: git@example.com:shop.git
branch: main
access_point: {url: 'http://ap.example.com', api_key: '${AP_KEY}'}
secrets: [{local: secrets/config.rb, remote: config.rb}]
hosts:
  kepler-1: {address: 10.0.0.1, roles: [kepler]}
"""
SECRET_FILE = """\
# config.rb
RAILS_ENV = 'production'
DB_PASSWORD = 'hunter22'
DATABASE_URL = "postgres://shop:pw-9f8e7d@db.internal/shop"
REQUIRE = 'config.rb'
enabled: true
"""


def project(tmp_path, monkeypatch, ap_key="main"):
    (tmp_path / "stages" / "secrets").mkdir(parents=True)
    (tmp_path / "stages" / "production.yml").write_text(STAGE)
    (tmp_path / "stages" / "secrets" / "config.rb").write_text(SECRET_FILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AP_KEY", ap_key)
    return load_stage("production")


def plan_text(plan) -> str:
    return "\n".join(a.display() for h in plan.hosts for s in h.steps for a in s.actions)


def test_a_secret_equal_to_the_branch_does_not_mask_the_branch(tmp_path, monkeypatch, capsys):
    stage = project(tmp_path, monkeypatch, ap_key="main")
    text = plan_text(build_plan(stage))
    assert "git reset --hard origin/main" in text and MASK not in text
    assert main(["config", "production"]) == 0
    out = capsys.readouterr().out
    assert "branch  main" in out or "branch\tmain" in out or "| main" in out or " main " in out
    assert f"access_point.api_key  {MASK}" in out.replace("\t", "  ") or MASK in out


def test_secrets_are_still_masked_everywhere(tmp_path, monkeypatch):
    stage = project(tmp_path, monkeypatch, ap_key="ap-key-0123456789")
    red = stage.redactor
    assert red.mask("auth with ap-key-0123456789 failed") == f"auth with {MASK} failed"
    assert red.mask("password hunter22 rejected") == f"password {MASK} rejected"
    assert red.mask("connect postgres://shop:pw-9f8e7d@db.internal/shop") == f"connect {MASK}"


def test_paths_file_names_and_server_words_are_not_masked(tmp_path, monkeypatch):
    stage = project(tmp_path, monkeypatch, ap_key="ap-key-0123456789")
    text = plan_text(build_plan(stage))
    assert "upload secrets/config.rb -> ~/code/shop/config.rb (mode 0600" in text
    red = stage.redactor
    for line in ("production database is missing", "loading config.rb", "enabled is true",
                 "server at localhost refused"):
        assert red.mask(line) == line


def test_short_secrets_only_mask_whole_words():
    red = Redactor().with_values("abc123")
    assert red.mask("token abc123 sent") == f"token {MASK} sent"
    assert red.mask("xabc123y") == "xabc123y"
    assert Redactor().with_values("abc").mask("abc") == "abc"  # below the minimum: never searched for
    long = Redactor().with_values("s3cr3t-Pampa-9f8e7d")
    assert long.mask("pre-s3cr3t-Pampa-9f8e7d-post") == f"pre-{MASK}-post"


def test_public_words_win_over_a_secret_inside_them():
    red = Redactor().with_values("deploy").with_public("/srv/deploy/shop")
    assert red.mask("cd /srv/deploy/shop && deploy") == f"cd /srv/deploy/shop && {MASK}"


def test_empty_secret_shows_empty_not_the_mask(tmp_path, monkeypatch, capsys):
    project(tmp_path, monkeypatch, ap_key="")
    assert main(["config", "production"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "access_point.api_key" in line)
    assert EMPTY in line and MASK not in line


def test_secret_fragments_keep_plain_words_out():
    found = secret_fragments(textwrap.dedent(SECRET_FILE))
    assert "hunter22" in found and "postgres://shop:pw-9f8e7d@db.internal/shop" in found
    assert not {"production", "true"} & set(found)  # config.rb is found, and kept readable as a public word
