"""The config loader: profiles, user file, ENCORE_HOME and ENCORE__ overrides, readable errors."""
from __future__ import annotations

import os

import pytest

from encore.config import load_config
from encore.errors import EncoreError

pytestmark = pytest.mark.unit


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


@pytest.mark.parametrize("environ, message", [
    ({"ENCORE__SCORE__TOP_K": "fifty"},
     "config key 'score.top_k' = 'fifty' (from environment ENCORE__SCORE__TOP_K): input should be a valid integer"),
    ({"ENCORE__SCORE__TOPK": "5"},
     "unknown config key 'score.topk' (from environment ENCORE__SCORE__TOPK): 'score' has top_k, block_users, actors"),
    ({"ENCORE__MUSIC__TRAIN__USE_GPU": "maybe"},
     "config key 'music.train.use_gpu' = 'maybe' (from environment ENCORE__MUSIC__TRAIN__USE_GPU): input should be "
     "a valid boolean"),
])
def test_a_wrong_or_unknown_setting_stops_at_load_with_one_line(environ, message):
    with pytest.raises(EncoreError) as info:
        load_config(environ=environ)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_misspelt_key_in_a_file_names_the_file(tmp_path):
    user = tmp_path / "encore.yaml"
    user.write_text("profiles:\n  local:\n    clean:\n      max_quarantine_shar: 0.3\n")
    with pytest.raises(EncoreError, match=r"unknown config key 'clean.max_quarantine_shar' \(from file .*encore.yaml\)"):
        load_config(config_file=str(user), environ={})


def test_every_profile_validates_and_sections_are_typed():
    for profile in ("local", "gpu", "demo", "cluster", "compose"):
        cfg = load_config(profile, environ={})
        assert isinstance(cfg.score.top_k, int) and cfg.music.train.d_model > 0
    assert load_config("gpu", environ={}).music.train.use_gpu is True
    assert load_config(environ={"ENCORE__CLEAN__MAX_QUARANTINE_SHARE": "0.5"}).clean.max_quarantine_share == 0.5


def test_config_show_names_where_each_value_came_from(tmp_path, capsys):
    from encore.pipeline.cli import main
    user = tmp_path / "encore.yaml"
    user.write_text("profiles:\n  demo:\n    generate:\n      users: 42\n")
    env = {"ENCORE__SCORE__TOP_K": "20", "ENCORE_HOME": str(tmp_path / "home")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert main(["--profile", "demo", "--config", str(user), "config", "show"]) == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in capsys.readouterr().out.splitlines()
            if "|" in line}
    assert rows["score.top_k"] == ["20", "environment ENCORE__SCORE__TOP_K"]
    value, origin = rows["generate.users"]   # a long path is cut in its middle (80 characters)
    assert value == "42" and origin.startswith("file /") and origin.endswith("/encore.yaml")
    assert origin == f"file {user}" or "..." in origin
    assert rows["music.train.d_model"] == ["128", "profile demo"]
    assert rows["score.block_users"] == ["512", "default"]
    assert rows["home"][1] == "environment ENCORE_HOME"
