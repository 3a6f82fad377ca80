"""The config loader: profiles, user file, ENCORE_HOME and ENCORE__ overrides, readable errors."""
from __future__ import annotations

import pytest

from encore.config import load_config
from encore.errors import EncoreError


def test_local_profile_puts_everything_under_home(tmp_path):
    cfg = load_config(environ={"ENCORE_HOME": str(tmp_path / "h")})
    assert cfg.profile == "local"
    for name in ("lakehouse", "landing", "catalog", "exports"):
        assert cfg.path(name).startswith(str(tmp_path / "h"))
    assert cfg.get("mlflow.tracking_uri") == f"sqlite:///{tmp_path / 'h'}/mlflow.db"
    assert cfg.get("spark.master") == "local[*]"


def test_compose_profile_extends_local_and_env_overrides_win(tmp_path):
    cfg = load_config("compose", environ={"ENCORE__SPARK__MASTER": "spark://h:7077",
                                          "ENCORE__CLEAN__MAX_QUARANTINE_SHARE": "0.5"})
    assert cfg.get("spark.master") == "spark://h:7077"
    assert cfg.path("lakehouse").startswith("s3a://")
    assert cfg.get("clean.max_quarantine_share") == 0.5          # typed, from the env
    assert cfg.get("clean.bot_max_plays_per_day") == 1000         # inherited from local


def test_user_file_merges_key_by_key(tmp_path):
    user = tmp_path / "encore.yaml"
    user.write_text("profiles:\n  local:\n    generate:\n      users: 42\n")
    cfg = load_config(config_file=str(user), environ={})
    assert cfg.get("generate.users") == 42 and cfg.get("generate.items") == 2000


@pytest.mark.parametrize("kwargs, message", [
    ({"profile": "nope"}, "unknown profile 'nope'"),
    ({"config_file": "/no/such/encore.yaml"}, "does not exist"),
])
def test_bad_config_is_one_readable_line(kwargs, message):
    with pytest.raises(EncoreError, match=message) as info:
        load_config(environ={}, **kwargs)
    assert "\n" not in str(info.value)


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: [unclosed\n")
    with pytest.raises(EncoreError, match="bad.yaml is not valid YAML"):
        load_config(config_file=str(bad), environ={})
