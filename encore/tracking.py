"""MLflow for every Ray job: the tracking store from config, lineage of the Delta versions read, the
model registry and the promotion gate that moves the ``champion`` alias.

Locally the store is a SQLite file with artifacts beside it under ``{home}`` (the registry needs a
database backend); the ``cluster`` profile points ``mlflow.tracking_uri`` at a server.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from encore.config import Config
from encore.errors import EncoreError

log = logging.getLogger(__name__)
CHAMPION = "champion"


def client(config: Config):
    """Point MLflow at the profile's store (creating a local one) and return an ``MlflowClient``."""
    import mlflow
    from mlflow import MlflowClient
    uri = config.mlflow.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Our logged tables and input examples have integer columns on purpose; the hint is noise.
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


def experiment(config: Config, name: str) -> str:
    """The experiment's id, created with artifacts under ``mlflow.artifact_root`` if it is new."""
    import mlflow
    c = client(config)
    found = c.get_experiment_by_name(name)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    root = config.mlflow.artifact_root
    location = None
    if root:
        location = str(root) if "://" in str(root) else Path(str(root)).resolve().as_uri()
    experiment_id = c.create_experiment(name, artifact_location=f"{location}/{name}" if location else None)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_delta_input(frame, name: str, path: str, version: int, context: str = "training") -> None:
    """Record a pinned Delta read (a pandas frame or an Arrow table) as an MLflow dataset input plus
    ``source.<table>.version`` params. Only the schema is logged."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    empty = frame.head(0) if hasattr(frame, "head") else frame.schema.empty_table().to_pandas()
    mlflow.log_param(f"source.{name}.version", version)
    mlflow.log_param(f"source.{name}.path", path)
    with warnings.catch_warnings():  # MLflow warns about integer columns and ambiguous local sources
        warnings.simplefilter("ignore")
        dataset = from_pandas(empty, source=path, name=f"{name}@v{version}")
    mlflow.log_input(dataset, context=context, tags={"delta_version": str(version)})


def log_png(png: bytes, artifact_file: str) -> None:
    """Log a figure (PNG bytes from encore.figures) to the active run as ``artifact_file``."""
    import tempfile
    import mlflow
    folder, _, name = artifact_file.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(png)
        mlflow.log_artifact(str(path), folder or None)


@dataclass(frozen=True)
class Champion:
    version: int
    run_id: str


# What MLflow answers when the registered model or its alias does not exist (sqlite and REST stores).
NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def champion(config: Config, model_name: str) -> Champion | None:
    """The model's ``champion`` version, or None when the model or the alias does not exist. Any other
    failure (a store that cannot be reached or read) is raised as one line naming the store: it must
    never read as "no champion", which would make a night train a new model."""
    from mlflow.exceptions import MlflowException
    c = client(config)
    try:
        mv = c.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            return None
        raise EncoreError(f"the MLflow store at {config.mlflow.tracking_uri} did not answer for model {model_name} "
                          f"({(str(exc).strip().splitlines() or [exc.error_code])[0][:200]}): check "
                          "mlflow.tracking_uri and that the store is running and reachable") from None
    return Champion(int(mv.version), mv.run_id)


def require_champion(config: Config, model_name: str, hint: str) -> Champion:
    found = champion(config, model_name)
    if found is None:
        raise EncoreError(f"no '{CHAMPION}' version of MLflow model {model_name} in {config.mlflow.tracking_uri}: "
                          f"{hint}")
    return found


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str
    candidate_score: float
    champion_score: float | None
    champion_version: int | None

    def as_metrics(self) -> dict[str, float]:
        out = {"gate.candidate_score": self.candidate_score, "gate.promoted": float(self.promoted)}
        if self.champion_score is not None:
            out["gate.champion_score"] = self.champion_score
        return out


def decide(candidate_score: float, champion_score: float | None, champion_version: int | None,
           metric: str, higher_is_better: bool) -> GateDecision:
    """Promote only a strictly better candidate, judged on the same validation data as the champion."""
    if candidate_score != candidate_score:  # NaN: a broken fit never becomes champion
        return GateDecision(False, f"candidate {metric} is NaN", candidate_score, champion_score, champion_version)
    if champion_score is None:
        return GateDecision(True, "no champion yet", candidate_score, None, None)
    better = candidate_score > champion_score if higher_is_better else candidate_score < champion_score
    relation = "beats" if better else "does not beat"
    digits = 4   # more where 4 would print a winner equal to the champion
    while digits < 8 and f"{candidate_score:.{digits}f}" == f"{champion_score:.{digits}f}" \
            and candidate_score != champion_score:
        digits += 1
    return GateDecision(better, f"candidate {metric} {candidate_score:.{digits}f} {relation} champion "
                        f"v{champion_version} {champion_score:.{digits}f}", candidate_score, champion_score,
                        champion_version)


def apply_gate(config: Config, model_name: str, candidate_version: int, decision: GateDecision) -> None:
    """Move the alias when promoted, and record the decision on the candidate version and the run."""
    import mlflow
    c = client(config)
    c.set_model_version_tag(model_name, str(candidate_version), "gate", decision.reason)
    if decision.promoted:
        c.set_registered_model_alias(model_name, CHAMPION, str(candidate_version))
    mlflow.log_metrics(decision.as_metrics())
    mlflow.set_tags({"gate.decision": "promoted" if decision.promoted else "refused", "gate.reason": decision.reason})
    log.info("%s v%s: %s (%s)", model_name, candidate_version, "promoted to champion" if decision.promoted
             else "not promoted", decision.reason)
