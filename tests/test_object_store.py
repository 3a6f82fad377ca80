"""The lakehouse on object storage: ``paths.lakehouse: s3a://…`` through hadoop-aws, against a real
S3 endpoint on this machine (moto's S3 server; MinIO is neither on PyPI nor in Debian).

The Spark steps run as separate ``encore`` processes, exactly as a user runs them, with only the
profile changed: landing stays a local folder, every Delta table lives in the bucket. A rerun of
clean must leave the same rows, and a second process must read the tables back.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import PROCESS_ENV, s3_client

ENCORE = str(Path(sys.executable).parent / "encore")
BUCKET = "encore-test"
DAY = "2026-11-20"
HADOOP_AWS = "org.apache.hadoop:hadoop-aws:3.5.0"   # matches pyspark 4.2's Hadoop 3.5.0


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([ENCORE, *args], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"encore {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def _rows(out: subprocess.CompletedProcess) -> list[list[str]]:
    """`encore sql` prints a header, a rule and rows separated by ' | '."""
    return [[cell.strip() for cell in line.split("|")] for line in out.stdout.splitlines()[2:] if "|" in line]


def test_spark_steps_on_an_s3a_lakehouse(s3_endpoint, tmp_path, monkeypatch):
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    config = tmp_path / "encore.yaml"
    config.write_text(yaml.safe_dump({"profiles": {"objectstore": {
        "extends": "local",
        "paths": {"lakehouse": f"s3a://{BUCKET}/lakehouse"},
        "spark": {
            "extra_packages": [HADOOP_AWS],
            "conf": {
                "spark.hadoop.fs.s3a.endpoint": s3_endpoint,
                "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
                "spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
                "spark.hadoop.fs.s3a.aws.credentials.provider":
                    "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider",
            },
        },
    }}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENCORE", "AWS_"))}
    env.update(PROCESS_ENV, ENCORE_HOME=str(tmp_path / "home"), ENCORE_CONFIG=str(config), ENCORE_PROFILE="objectstore",
               AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")

    _run(env, "generate-logs", "--days", "1", "--end-date", DAY, "--events-per-day", "10000", "--users", "150",
         "--items", "200", "--fault-rate", "0.05", "--bots", "1")
    _run(env, "ingest")
    _run(env, "clean", "--date", DAY)

    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="lakehouse/")
            for o in page.get("Contents", [])}
    for table in ("bronze/plays_raw", "silver/plays", "silver/plays_quarantine"):
        assert any(k.startswith(f"lakehouse/{table}/_delta_log/") for k in keys), f"no Delta log for {table} in the bucket"
        assert any(k.startswith(f"lakehouse/{table}/") and k.endswith(".parquet") for k in keys), table
    # S3A keeps an empty marker for the parent folder of what it deletes ("lakehouse/_staging/").
    staged = [k for k in keys if k.startswith("lakehouse/_staging/") and not k.endswith("/")]
    assert not staged, f"clean left its staging files behind: {staged[:5]}"
    assert not (tmp_path / "home" / "lakehouse").exists(), "tables were written locally, not to the bucket"

    query = ("SELECT (SELECT count(*) FROM silver.plays) AS kept, "
             "(SELECT count(*) FROM silver.plays_quarantine) AS quarantined, "
             "(SELECT count(DISTINCT reason) FROM silver.plays_quarantine) AS reasons")
    first = _rows(_run(env, "sql", query))
    kept, quarantined, reasons = (int(v) for v in first[0])
    assert kept > 7000 and quarantined > 100 and reasons >= 8, first

    _run(env, "clean", "--date", DAY)      # a rerun replaces the date in the bucket: no duplicates
    assert _rows(_run(env, "sql", query)) == first

    # The Ray jobs read the lakehouse through delta-rs, with the endpoint taken from the same profile
    # (features writes gold with the same Lakehouse code as clean: not run again here).
    from encore.config import load_config
    from encore.delta_reader import read_filtered
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    pinned = read_filtered(load_config(environ=env), "silver.plays", None, ["event_id"])
    assert pinned.path.startswith(f"s3a://{BUCKET}/") and len(pinned.frame) == kept
