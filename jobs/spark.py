"""The one Spark session factory: Delta extensions, jars, config, and the catalog registration.

Delta's Spark jars are not in the delta-spark wheel. The first session resolves them from Maven
Central with Spark's own resolver into ``paths.jars``; every later session loads them from there
with ``spark.jars`` and needs no network. ``ENCORE_SPARK_JARS`` (comma-separated) overrides both.
"""
from __future__ import annotations

import logging
import os
import sys
import re
import shutil
import subprocess
from pathlib import Path

from jobs.config import Config
from jobs.errors import EncoreError

log = logging.getLogger(__name__)

# delta-spark 4.4.0 is built against Spark 4.2.0 / Scala 2.13 (the 4.4.1 jar is not published).
DELTA_PACKAGE = "io.delta:delta-spark_2.13:4.4.0"
MIN_JAVA = 17
_MANIFEST = "jars.txt"


def check_java() -> None:
    """Stop with one line when Java is missing or older than 17."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise EncoreError(f"Java {MIN_JAVA}+ is required and was not found: install OpenJDK {MIN_JAVA} "
                          "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise EncoreError(f"Java {MIN_JAVA}+ is required, found Java {major} at {java}: "
                          f"install OpenJDK {MIN_JAVA} or point JAVA_HOME at it")


def _spark_jar_artifacts() -> set[str]:
    import pyspark
    jars = Path(pyspark.__file__).parent / "jars"
    return {re.sub(r"-\d[\w.\-]*\.jar$", "", p.name) for p in jars.glob("*.jar")}


def _record_resolved_jars(jar_dir: Path) -> None:
    """Keep the resolved jars Spark does not ship itself (older copies would shadow nothing useful)."""
    shipped = _spark_jar_artifacts()
    keep = []
    for jar in sorted((jar_dir / "ivy" / "jars").glob("*.jar")):
        artifact = re.sub(r"-\d[\w.\-]*\.jar$", "", jar.name.split("_", 1)[-1])
        if artifact not in shipped:
            keep.append(str(jar))
    if not any("delta-spark" in j for j in keep):
        raise EncoreError(f"Delta jars were not resolved into {jar_dir}: check access to Maven Central "
                          "or set ENCORE_SPARK_JARS to local copies of " + DELTA_PACKAGE)
    (jar_dir / _MANIFEST).write_text("\n".join(keep) + "\n")


def _jar_settings(config: Config) -> tuple[dict, Path | None]:
    """Spark conf for Delta's jars, and the folder to record after a first resolution (or None)."""
    explicit = os.environ.get("ENCORE_SPARK_JARS") or config.get("spark.jars")
    if explicit:
        return {"spark.jars": explicit}, None
    # paths.jars, or the user's cache where that is not writable (e.g. a system-wide Python)
    candidates = [Path(config.path("jars")), Path.home() / ".cache" / "encore" / "jars"]
    for jar_dir in candidates:
        manifest = jar_dir / _MANIFEST
        if manifest.is_file():
            jars = [j for j in manifest.read_text().split() if j]
            if all(Path(j).is_file() for j in jars):
                return {"spark.jars": ",".join(jars)}, None
    for jar_dir in candidates:
        try:
            jar_dir.mkdir(parents=True, exist_ok=True)
            break
        except OSError:
            continue
    log.info("resolving %s from Maven Central into %s (first run only)", DELTA_PACKAGE, jar_dir)
    return {"spark.jars.packages": DELTA_PACKAGE, "spark.jars.ivy": str(jar_dir / "ivy")}, jar_dir


def build_session(config: Config, app_name: str = "encore"):
    """Start (or return the running) SparkSession configured for Delta and this profile."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    check_java()
    spark_cfg = config.section("spark")
    # PySpark starts UDF workers with $PYSPARK_PYTHON (default: whatever `python3` is on PATH),
    # which would miss this environment's packages.
    os.environ.setdefault("PYSPARK_PYTHON", str(spark_cfg.get("python") or sys.executable))
    jar_conf, resolve_into = _jar_settings(config)
    builder = (SparkSession.builder.appName(app_name)
               .master(str(spark_cfg.get("master", "local[*]")))
               .config("spark.driver.memory", str(spark_cfg.get("driver_memory", "4g")))
               .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
               .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
               .config("spark.sql.warehouse.dir", config.path("catalog") + "/warehouse")
               .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={config.path('catalog')}")
               .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"]))
    for key, value in {**jar_conf, **(spark_cfg.get("conf") or {})}.items():
        builder = builder.config(key, str(value))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM failed to start: surface the one actionable line
        raise EncoreError(f"Spark failed to start ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
                          "check Java 17 and, on first run, access to Maven Central") from exc
    spark.sparkContext.setLogLevel(str(spark_cfg.get("log_level", "WARN")))
    if resolve_into is not None:
        _record_resolved_jars(resolve_into)
    return spark
