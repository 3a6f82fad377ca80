"""Where each lakehouse table lives, and how delta-rs reaches it: the layout
``<paths.lakehouse>/<layer>/<table>`` and the storage options of an object store. Free of Spark
and pandas, so that `encore sql` and the Ray jobs' readers start quickly. Also where the CLI's own
log files go (``<home>/logs/``).
"""
from __future__ import annotations

from pathlib import Path

from encore.config import Config
from encore.errors import EncoreError
from schemas import table_names

REGISTERED = frozenset(v for k, v in vars(table_names).items() if k.isupper() and isinstance(v, str))


def table_path(config: Config, name: str) -> str:
    """Where a registered table lives under the profile's lakehouse: ``<root>/<layer>/<table>``."""
    if name not in REGISTERED:
        raise EncoreError(f"unknown table '{name}': registered tables are {', '.join(sorted(REGISTERED))}")
    layer, table = name.split(".")
    return f"{config.path('lakehouse')}/{layer}/{table}"


def storage_uri(path: str, config: Config | None = None) -> tuple[str, dict[str, str] | None]:
    """(uri for delta-rs, storage options): Spark's ``s3a://`` is plain ``s3://`` to delta-rs.

    With ``config``, the S3 endpoint and region come from the profile's ``spark.hadoop.fs.s3a.*``
    settings, so an S3-compatible store (MinIO, a local endpoint) is configured once for both
    Spark and the Ray jobs. Credentials come from the environment (AWS_ACCESS_KEY_ID, …) on both.
    """
    if not path.startswith("s3a://"):
        return path, None
    options = {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    conf = config.spark.conf if config is not None else {}
    endpoint = conf.get("spark.hadoop.fs.s3a.endpoint")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if conf.get("spark.hadoop.fs.s3a.endpoint.region"):
        options["AWS_REGION"] = str(conf["spark.hadoop.fs.s3a.endpoint.region"])
    return "s3://" + path[len("s3a://"):], options


def log_file(config: Config, name: str) -> Path | None:
    """``<home>/logs/<name>``, its folder created; None when the home is not a local folder."""
    if "://" in config.home:
        return None
    folder = Path(config.home) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
