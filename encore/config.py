"""The one config loader: embedded defaults, an optional user file, named profiles, env overrides.

Resolution order (later wins):
  1. ``encore/defaults.yaml`` (embedded), profile chosen by ``--profile`` / ``ENCORE_PROFILE``;
  2. a user file (``--config`` / ``ENCORE_CONFIG``) with the same layout, merged key by key;
  3. ``ENCORE_HOME`` for ``home``; ``ENCORE__A__B=value`` for any nested key ``a.b``.

The result is validated once against ``encore.settings.Settings``: an unknown key or a value of
the wrong type stops the command before any work, with one line naming the key, the value, where it
came from and what was expected. ``Config`` remembers where each value came from
(``encore config show``) and hands out typed sections (``config.score.top_k``).
"""
from __future__ import annotations

import copy
import functools
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from encore.errors import EncoreError
from encore.settings import Settings

ENV_PREFIX = "ENCORE__"
# libyaml's loader when PyYAML was built with it: the embedded defaults parse in ~3 ms instead of ~40 ms.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
        data = yaml.load(text, Loader=_LOADER) or {}
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
            node = node.setdefault(_existing_key(node, part), {})
            if not isinstance(node, dict):
                raise EncoreError(f"{key} addresses a nested key under a non-mapping value")
        node[_existing_key(node, parts[-1])] = _parse_scalar(raw)
    return settings


def _existing_key(node: dict, lowered: str) -> str:
    """An environment variable's key as the configuration spells it: environment names are upper
    case, and Spark's conf keys are camel case (``spark.eventLog.enabled``) and case-sensitive."""
    return next((k for k in node if isinstance(k, str) and k.lower() == lowered), lowered)


@dataclass(frozen=True)
class Config:
    """Resolved settings of one profile; paths are absolute (or URIs such as s3a://). Sections are
    typed objects too: ``config.score.top_k`` is an int, validated at load."""

    profile: str
    settings: dict
    origins: dict = field(default_factory=dict, compare=False)   # dotted key -> where its value came from

    @functools.cached_property
    def typed(self) -> Settings:
        return validate(self.settings, self.origins)

    def __getattr__(self, name: str):
        if name in Settings.model_fields:
            return getattr(self.typed, name)
        raise AttributeError(name)

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


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every setting as ``dotted.key -> value`` (Spark's conf keys keep their own dots)."""
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _origins(defaults: dict, profile_name: str, profiled: dict, filed: dict, file_name: str | None) -> dict[str, str]:
    """Where each leaf came from: the embedded default profile, the chosen profile or the file (load_config
    adds the environment's)."""
    base, mine, with_file = leaves(defaults), leaves(profiled), leaves(filed)
    origins = {}
    for key, value in with_file.items():
        if file_name and (key not in mine or mine[key] != value):
            origins[key] = f"file {file_name}"
        elif key in base and base[key] == value:
            origins[key] = "default"
        else:
            origins[key] = f"profile {profile_name}"
    return origins


def _describe(error: dict, settings: dict, origins: dict) -> str:
    loc = [str(p) for p in error["loc"]]
    # a union (bool | 'auto') adds its member to loc: the key is the longest prefix that is a setting
    depth = next((i for i in range(len(loc), 0, -1) if _has_path(settings, loc[:i])), len(loc))
    key = ".".join(loc[:depth])
    origin = origins.get(key, "default")
    if error["type"] == "extra_forbidden":
        parent = ".".join(loc[:depth - 1])
        known = _known_keys(loc[:depth - 1])
        return (f"unknown config key '{key}' (from {origin}): "
                + (f"'{parent or 'the top level'}' has {', '.join(known)}" if known else "no such setting")
                + "; fix or remove it")
    if error["type"] == "missing":
        return f"config key '{key}' is missing in profile and file: add it (see encore/defaults.yaml)"
    return f"config key '{key}' = {error.get('input')!r} (from {origin}): {error['msg'][0].lower()}{error['msg'][1:]}"


def _has_path(settings: dict, parts: list[str]) -> bool:
    node: Any = settings
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _known_keys(parts: list[str]) -> list[str]:
    from pydantic import BaseModel
    model = Settings
    for part in parts:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def validate(settings: dict, origins: dict | None = None) -> Settings:
    """The settings as typed sections; one ``EncoreError`` line for the first key with a problem."""
    try:
        return Settings.model_validate(settings)
    except ValidationError as exc:
        problems = exc.errors()
        by_key: dict[tuple, list[dict]] = {}
        for problem in problems:
            loc = [str(p) for p in problem["loc"]]
            depth = next((i for i in range(len(loc), 0, -1) if _has_path(settings, loc[:i])), len(loc))
            by_key.setdefault(tuple(loc[:depth]), []).append(problem)
        first = next(iter(by_key.values()))
        line = _describe(first[0], settings, origins or {})
        if len(first) > 1:   # a union's members each failed: say what any of them would take
            line += " (or " + " or ".join(p["msg"][0].lower() + p["msg"][1:] for p in first[1:]) + ")"
        if len(by_key) > 1:
            line += f"; and {len(by_key) - 1} more key{'s' if len(by_key) > 2 else ''} wrong"
        raise EncoreError(line) from None


def load_config(profile: str | None = None, config_file: str | None = None,
                environ: dict | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    embedded = _read_yaml(resources.files("encore").joinpath("defaults.yaml").read_text(), "defaults.yaml")
    default_name = embedded.get("default_profile", "local")
    name = profile or environ.get("ENCORE_PROFILE") or default_name
    embedded_profiles = embedded.get("profiles") or {}
    defaults = _resolve_profile(embedded_profiles, default_name)
    # a profile the user file defines (not an embedded one): what differs from the defaults came from the file
    profiled = _resolve_profile(embedded_profiles, name) if name in embedded_profiles else defaults
    config_file = config_file or environ.get("ENCORE_CONFIG")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise EncoreError(f"config file {config_file} does not exist: pass an existing file to --config or ENCORE_CONFIG")
        embedded = _deep_merge(embedded, _read_yaml(path.read_text(), str(path)))
    profiles = embedded.get("profiles") or {}
    settings = _resolve_profile(profiles, name)
    origins = _origins(defaults, name, profiled, settings, config_file)
    if environ.get("ENCORE_HOME"):
        settings["home"] = environ["ENCORE_HOME"]
        origins["home"] = "environment ENCORE_HOME"
    settings = _apply_env(settings, environ)
    origins.update({".".join(p.lower() for p in k[len(ENV_PREFIX):].split("__") if p): f"environment {k}"
                    for k in environ if k.startswith(ENV_PREFIX)})
    settings["home"] = _absolute(str(settings.get("home", "./var")))
    paths = settings.setdefault("paths", {})
    for key, value in list(paths.items()):
        paths[key] = _absolute(str(value).format(home=settings["home"], prefix=sys.prefix))
    mlflow = settings.get("mlflow") or {}
    for key in ("tracking_uri", "artifact_root"):
        if mlflow.get(key):
            value = str(mlflow[key]).format(home=settings["home"])
            mlflow[key] = value if key == "tracking_uri" else _absolute(value)
    config = Config(profile=name, settings=settings, origins=origins)
    config.typed   # validated now, before any work
    return config
