"""The typed shape of Encore's settings: one pydantic model per section of encore/defaults.yaml.

Every model forbids unknown keys, so a misspelt key (in a file or an ``ENCORE__…`` variable) stops
the command at start-up instead of being ignored; a wrong-typed value does too. ``encore.config``
builds one ``Settings`` per command and hands its sections to the code as typed objects
(``config.score.top_k``).
"""
from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(Section):
    lakehouse: str
    landing: str
    catalog: str
    exports: str
    export_staging: str
    reports: str
    spark_events: str
    jars: str
    ray_storage: str
    artifacts: str
    secrets: str


class Spark(Section):
    master: str
    driver_memory: str
    java_options: str = ""
    conf: dict[str, str] = {}
    extra_packages: list[str] = []
    jars: Optional[str] = None           # comma-separated jars instead of resolving Delta's (offline hosts)
    python: Optional[str] = None         # the executors' Python (default: this one)
    log_level: str = "WARN"

    @field_validator("conf", mode="before")
    @classmethod
    def _conf_as_strings(cls, value):
        # Spark takes every setting as a string; YAML may have typed "8" as 8 or "true" as True.
        if isinstance(value, dict):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value


class MLflow(Section):
    tracking_uri: str
    artifact_root: str


class Ray(Section):
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    dashboard: Optional[str] = None
    auth_mode: Optional[str] = None
    entrypoint: str = "encore"


class Airflow(Section):
    submit: Literal["local", "cluster"]
    spark_conn_id: str
    retries: int


class Generate(Section):
    source: Literal["synthetic", "hetrec"]
    days: int
    end_date: dt.date
    seed: int
    events_per_day: int
    users: int
    items: int
    fault_rate: float
    bots: int
    events_per_file: int
    hetrec_dir: Optional[str] = None
    scale: float = 0.01
    workers: Optional[int] = None
    double_scrobbles: float = 0.01


class Clean(Section):
    max_quarantine_share: float
    dedupe_lookback_days: int
    duplicate_play_window_seconds: int = Field(ge=1)
    max_line_bytes: int = Field(ge=1)
    max_ms_played: int
    future_tolerance_hours: float
    min_event_time: str
    bot_max_plays_per_day: int
    bot_max_listening_hours_per_day: float


class Features(Section):
    window_days: int
    top_tags_per_item: int
    top_tags_per_user: int


class RecommenderParams(Section):
    loss: str
    no_components: int
    learning_rate: float
    max_sampled: int
    item_alpha: float
    user_alpha: float
    epochs: int
    n_tags: int
    tag_share: float
    user_tag_share: float
    weighting: Literal["log", "binary"]
    ensemble: int


class Search(Section):
    trials: int
    cpus_per_trial: int
    max_concurrent: int
    eval_every: int
    patience: int
    grace_evaluations: int


class Baselines(Section):
    ease_lambda: float
    ease_max_items: int


class Recommender(Section):
    experiment: str
    model_name: str
    seed: int
    holdout_share: float
    min_items: int
    eval_users: Optional[int] = None
    blend: bool
    final_threads: int
    params: RecommenderParams
    search: Search
    baselines: Baselines


class Corpus(Section):
    limit_per_source: Optional[int] = None
    pop909_dir: Optional[str] = None
    nottingham_dir: Optional[str] = None
    bpe_vocab_size: int


class MusicTrain(Section):
    context: int
    d_model: int
    n_layers: int
    n_heads: int
    dropout: float
    epochs: int
    batch_size: int
    lr: float
    warmup_steps: int
    seed: int
    num_workers: int
    use_gpu: bool | Literal["auto"]
    compile: bool
    max_failures: int


class MusicGenerate(Section):
    bars: int
    temperature: float
    top_p: float
    in_key: bool
    tonic_frame: bool
    min_bar_fill: float
    min_in_scale: float
    min_diatonic_share: float
    require_key: bool
    max_shared_intervals: int
    retries: int


class MusicReport(Section):
    sketches_per_style: int
    bars: int


class MusicAudio(Section):
    soundfont: Optional[str] = None       # a General MIDI .sf2 (default: a system one, encore/audio.py)
    format: Literal["ogg", "flac", "wav"] = "ogg"   # of the export's previews


class Music(Section):
    corpus: Corpus
    experiment: str
    model_name: str
    train: MusicTrain
    generate: MusicGenerate
    report: MusicReport
    audio: MusicAudio


class Nightly(Section):
    experiment: str


class Score(Section):
    top_k: int
    block_users: int
    actors: int


class Packs(Section):
    sketches: int
    seed_items: int
    styles_per_pack: int
    conditions_per_style: int
    pool_per_condition: int
    bars: int
    batch: int
    actors: int
    use_gpu: bool | Literal["auto"]
    default_style: str
    style_tags: dict[str, list[str]]


class Export(Section):
    keep_runs: int
    max_file_mb: float = Field(gt=0)
    notify_url: str | None = None
    notify_attempts: int = Field(ge=1)


class SqlServer(Section):
    host: str
    port: int = Field(ge=1, le=65535)


class Maintain(Section):
    experiment: str
    vacuum_retention_hours: int = Field(ge=0)     # whole hours: Delta rounds or drops a fraction
    log_retention_hours: float = Field(ge=0)
    optimize_days: int = Field(ge=1)
    zorder: dict[str, list[str]] = {}
    keep: dict[str, Optional[int]] = {}

    @field_validator("zorder", "keep")
    @classmethod
    def _known_partitioned_tables(cls, value: dict, info):
        from schemas.tables import TABLES
        for name in value:
            if name not in TABLES:
                raise ValueError(f"maintain.{info.field_name}: unknown table {name!r} (tables: {', '.join(TABLES)})")
            if info.field_name == "keep" and not TABLES[name].partition_by:
                raise ValueError(f"maintain.keep: {name} has no date partitions to keep or drop")
        if info.field_name == "keep":
            for name, count in value.items():
                if count is not None and count < 1:
                    raise ValueError(f"maintain.keep.{name} is {count}: keep at least 1 date, or null to keep all")
        return value


class Settings(Section):
    home: str
    paths: Paths
    spark: Spark
    mlflow: MLflow
    ray: Ray
    airflow: Airflow
    generate: Generate
    clean: Clean
    features: Features
    recommender: Recommender
    music: Music
    nightly: Nightly
    score: Score
    packs: Packs
    export: Export
    sql_server: SqlServer
    maintain: Maintain
