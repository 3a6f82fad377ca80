"""The one config loader: embedded defaults, an optional user file, named profiles, env overrides.

Resolution order (later wins):
  1. ``encore/defaults.yaml`` (embedded), profile chosen by ``--profile`` / ``ENCORE_PROFILE``;
  2. a user file (``--config`` / ``ENCORE_CONFIG``) with the same layout, merged key by key;
  3. ``ENCORE_HOME`` for ``home``; ``ENCORE__A__B=value`` for any nested key ``a.b``.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from encore.errors import EncoreError

ENV_PREFIX = "ENCORE__"


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise EncoreError(f"config {origin} is not valid YAML ({exc.__class__.__name__}): fix the syntax") from None
    if not isinstance(data, dict):
        raise EncoreError(f"config {origin} must be a mapping with a 'profiles' key")
    return data


def _resolve_profile(profiles: dict, name: str, seen: tuple = ()) -> dict:
    if name not in profiles:
        raise EncoreError(f"unknown profile '{name}': choose one of {', '.join(sorted(profiles))}")
    if name in seen:
        raise EncoreError(f"profile '{name}' extends itself through {' -> '.join(seen)}")
    profile = profiles[name] or {}
    parent = profile.get("extends")
    if parent:
        base = _resolve_profile(profiles, parent, seen + (name,))
        profile = _deep_merge(base, {k: v for k, v in profile.items() if k != "extends"})
    return profile


def _parse_scalar(text: str) -> Any:
    # YAML typing for env values so ENCORE__CLEAN__MAX_QUARANTINE_SHARE=0.5 is a float.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _apply_env(settings: dict, environ: dict) -> dict:
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        node = settings
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EncoreError(f"{key} addresses a nested key under a non-mapping value")
        node[parts[-1]] = _parse_scalar(raw)
    return settings


@dataclass(frozen=True)
class Config:
    """Resolved settings of one profile; paths are absolute (or URIs such as s3a://)."""

    profile: str
    settings: dict

    def section(self, name: str) -> dict:
        return self.settings.get(name) or {}

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.settings
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def require(self, dotted: str) -> Any:
        value = self.get(dotted)
        if value is None:
            raise EncoreError(f"config key '{dotted}' is missing in profile '{self.profile}'")
        return value

    @property
    def home(self) -> str:
        return self.settings["home"]

    def path(self, name: str) -> str:
        """A configured location (lakehouse, landing, catalog, exports, jars)."""
        return self.require(f"paths.{name}")


def _is_uri(path: str) -> bool:
    return "://" in path


def _absolute(path: str) -> str:
    return path if _is_uri(path) else str(Path(path).expanduser().resolve())


def load_config(profile: str | None = None, config_file: str | None = None,
                environ: dict | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    embedded = _read_yaml(resources.files("encore").joinpath("defaults.yaml").read_text(), "defaults.yaml")
    config_file = config_file or environ.get("ENCORE_CONFIG")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise EncoreError(f"config file {config_file} does not exist: pass an existing file to --config or ENCORE_CONFIG")
        embedded = _deep_merge(embedded, _read_yaml(path.read_text(), str(path)))
    profiles = embedded.get("profiles") or {}
    name = profile or environ.get("ENCORE_PROFILE") or embedded.get("default_profile", "local")
    settings = _resolve_profile(profiles, name)
    if environ.get("ENCORE_HOME"):
        settings["home"] = environ["ENCORE_HOME"]
    settings = _apply_env(settings, environ)
    settings["home"] = _absolute(str(settings.get("home", "./var")))
    paths = settings.setdefault("paths", {})
    for key, value in list(paths.items()):
        paths[key] = _absolute(str(value).format(home=settings["home"], prefix=sys.prefix))
    mlflow = settings.get("mlflow") or {}
    for key in ("tracking_uri", "artifact_root"):
        if mlflow.get(key):
            value = str(mlflow[key]).format(home=settings["home"])
            mlflow[key] = value if key == "tracking_uri" else _absolute(value)
    return Config(profile=name, settings=settings)
