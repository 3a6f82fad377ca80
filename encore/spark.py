"""The one Spark session factory: Delta extensions, jars, config, and the catalog registration.

Delta's Spark jars are not in the delta-spark wheel. The first session resolves them from Maven
Central with Spark's own resolver into ``paths.jars``; every later session loads them from there
with ``spark.jars`` and needs no network. ``ENCORE_SPARK_JARS`` (comma-separated) overrides both.
Encore's own jar (encore/udfs.py) is compiled into ``paths.jars`` on first use and always added.

``encore setup`` also dumps a class archive (Java's dynamic class data sharing) of what a Spark
session loads from pyspark's jars into the same folder; every later driver JVM maps it instead of
loading and verifying those classes again. A step's JVM then spends about half the CPU it did to
reach its first query (8.6-9.6 s without, 4.7-5.5 s with, on 2 cores). A JVM whose class path differs
from the archive's (another Java, another pyspark) just starts without it.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import re
import shutil
import subprocess
from pathlib import Path

from encore import udfs
from encore.config import Config
from encore.errors import EncoreError

log = logging.getLogger(__name__)

# delta-spark 4.4.0 is built against Spark 4.2.0 / Scala 2.13 (the 4.4.1 jar is not published).
DELTA_PACKAGE = "io.delta:delta-spark_2.13:4.4.0"
MIN_JAVA = 17
_MANIFEST = "jars.txt"
_PACKAGES = "packages.txt"   # the coordinates jars.txt was resolved for


def _java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")


@functools.lru_cache(maxsize=None)
def _java_version(java: str) -> str:
    return subprocess.run([java, "-version"], capture_output=True, text=True).stderr


def check_java() -> str:
    """The java executable; stop with one line when Java is missing or older than 17."""
    java = _java()
    if not java or not Path(java).exists():
        raise EncoreError(f"Java {MIN_JAVA}+ is required and was not found: install OpenJDK {MIN_JAVA} "
                          "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    out = _java_version(java)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise EncoreError(f"Java {MIN_JAVA}+ is required, found Java {major} at {java}: "
                          f"install OpenJDK {MIN_JAVA} or point JAVA_HOME at it")
    return java


def _spark_jar_artifacts() -> set[str]:
    import pyspark
    jars = Path(pyspark.__file__).parent / "jars"
    return {re.sub(r"-\d[\w.\-]*\.jar$", "", p.name) for p in jars.glob("*.jar")}


def _record_resolved_jars(jar_dir: Path, packages: list[str]) -> None:
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
    (jar_dir / _PACKAGES).write_text("\n".join(packages) + "\n")


def _packages(config: Config) -> list[str]:
    """Maven coordinates resolved for Spark: Delta, plus ``spark.extra_packages`` (e.g. hadoop-aws for s3a://)."""
    return [DELTA_PACKAGE, *config.spark.extra_packages]


def _jar_dir(base: Path, packages: list[str]) -> Path:
    """Delta's jars live in ``base``; a profile with extra packages (hadoop-aws) gets a folder of its
    own, so switching profiles never re-resolves or mixes the two sets."""
    extra = packages[1:]
    if not extra:
        return base
    return base / ("with-" + hashlib.sha256(",".join(extra).encode()).hexdigest()[:12])


def _jar_homes(config: Config) -> list[Path]:
    """paths.jars, or the user's cache where that is not writable (e.g. a system-wide Python)."""
    return [Path(config.path("jars")), Path.home() / ".cache" / "encore" / "jars"]


def _udf_jar(config: Config) -> str:
    """Encore's own JVM functions (encore/udfs.py), compiled into the first writable jar folder on first use."""
    homes = _jar_homes(config)
    for home in homes:
        if (home / udfs.jar_name()).is_file():
            return str(home / udfs.jar_name())
    java = check_java()
    for home in homes:
        try:
            return str(udfs.build_jar(home, java))
        except OSError:
            continue
    raise EncoreError(f"no writable folder for Encore's jars: make paths.jars ({homes[0]}) writable")


def _jar_settings(config: Config) -> tuple[dict, Path | None]:
    """Spark conf for Delta's jars and Encore's own, and the folder to record after a first resolution (or None)."""
    own = _udf_jar(config)
    explicit = os.environ.get("ENCORE_SPARK_JARS") or config.spark.jars
    if explicit:
        return {"spark.jars": f"{explicit},{own}"}, None
    packages = _packages(config)
    candidates = [_jar_dir(home, packages) for home in _jar_homes(config)]
    for jar_dir in candidates:
        manifest = jar_dir / _MANIFEST
        resolved_for = jar_dir / _PACKAGES
        recorded = resolved_for.read_text().split() if resolved_for.is_file() else [DELTA_PACKAGE]
        if manifest.is_file() and recorded == packages:
            jars = [j for j in manifest.read_text().split() if j]
            if all(Path(j).is_file() for j in jars):
                return {"spark.jars": ",".join([*jars, own])}, None
    for jar_dir in candidates:
        try:
            jar_dir.mkdir(parents=True, exist_ok=True)
            break
        except OSError:
            continue
    log.info("resolving %s from Maven Central into %s (first run only)", ", ".join(packages), jar_dir)
    return {"spark.jars.packages": ",".join(packages), "spark.jars.ivy": str(jar_dir / "ivy"), "spark.jars": own}, jar_dir


def class_archive_name() -> str:
    """The archive's file name: a hash of the Java build and the pyspark install whose jars it holds."""
    import pyspark
    java = check_java()
    digest = hashlib.sha256("\0".join([java, _java_version(java), pyspark.__version__,
                                        str(Path(pyspark.__file__).parent)]).encode())
    return f"spark-classes-{digest.hexdigest()[:12]}.jsa"


def class_archive(config: Config) -> Path | None:
    """This Java's and this pyspark's class archive, where ``encore setup`` left one."""
    name = class_archive_name()
    return next((home / name for home in _jar_homes(config) if (home / name).is_file()), None)


_DUMP = """
import json, sys
from pathlib import Path
from encore.config import Config
from encore.spark import build_session
config = Config(**json.loads(Path(sys.argv[1]).read_text()))
spark = build_session(config, "encore-class-archive", dump_class_archive=Path(sys.argv[2]))
folder = sys.argv[3]
spark.range(1000).selectExpr("id", "id % 7 AS k", "cast(id AS string) AS s").write.format("delta").save(folder)
spark.sql(f"MERGE INTO delta.`{folder}` t USING (SELECT 1L AS id, 1L AS k, 'x' AS s) u ON t.id = u.id "
          "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
frame = spark.read.format("delta").load(folder)
frame.groupBy("k").count().join(frame, "k").orderBy("id").limit(5).collect()
spark.sql(f"DESCRIBE HISTORY delta.`{folder}`").collect()
print(f"jvm-pid={spark.sparkContext._jvm.ProcessHandle.current().pid()}", flush=True)
"""


def build_class_archive(config: Config) -> Path | None:
    """Dump the class archive with a JVM of its own that starts Spark and runs a small Delta workload; it
    is written when that JVM exits, then renamed into place. None where no folder can hold it."""
    import psutil
    import tempfile
    import time
    name = class_archive_name()
    for home in _jar_homes(config):
        try:
            home.mkdir(parents=True, exist_ok=True)
            staged = Path(tempfile.mkdtemp(dir=home, prefix=".class-archive-"))
        except OSError:
            continue
        try:
            import json
            (staged / "config.json").write_text(json.dumps({"profile": config.profile, "settings": config.settings},
                                                           default=str))
            done = subprocess.run([sys.executable, "-c", _DUMP, str(staged / "config.json"), str(staged / name),
                                   str(staged / "probe")], capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                log.warning("no class archive: its JVM failed (%s)", (done.stderr.strip().splitlines() or ["?"])[-1])
                return None
            jvm = int(re.search(r"jvm-pid=(\d+)", done.stdout).group(1))
            deadline = time.monotonic() + 300
            while psutil.pid_exists(jvm) and time.monotonic() < deadline:   # it writes the archive as it exits
                time.sleep(0.2)
            if not (staged / name).is_file():
                log.warning("no class archive: the JVM wrote none into %s", staged)
                return None
            os.replace(staged / name, home / name)
            return home / name
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    return None


def session_settings(config: Config, dump_class_archive: Path | None = None) -> tuple[dict, Path | None]:
    """Every Spark setting of this profile (master, memory, JVM options, Delta, jars, conf), and the folder to
    record after a first jar resolution (or None). ``build_session`` and the DAGs' spark-submit
    (cluster profile) both use it, so a submitted step runs with the same settings as a local one."""
    spark_cfg = config.spark
    # PySpark starts UDF workers with $PYSPARK_PYTHON (default: whatever `python3` is on PATH),
    # which would miss this environment's packages.
    python = os.environ.get("PYSPARK_PYTHON") or spark_cfg.python or sys.executable
    jar_conf, resolve_into = _jar_settings(config)
    java_options = spark_cfg.java_options.strip()
    # The class archive (module docstring): dumped by `encore setup`'s own JVM, mapped by every other driver.
    archive = class_archive(config) if dump_class_archive is None else None
    quiet = "-Xlog:cds=off -Xlog:cds+dynamic=off"   # its notes (skipped classes, a mismatch) would go to stdout
    sharing = (f"-XX:ArchiveClassesAtExit={dump_class_archive} {quiet}" if dump_class_archive is not None else
               f"-XX:SharedArchiveFile={archive} -Xshare:auto {quiet}" if archive else "")
    settings = {
        "spark.master": spark_cfg.master,
        "spark.driver.memory": spark_cfg.driver_memory,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.warehouse.dir": config.path("catalog") + "/warehouse",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={config.path('catalog')} {java_options} {sharing}".strip(),
        "spark.pyspark.python": python,
        **jar_conf,
    }
    if java_options:
        settings["spark.executor.extraJavaOptions"] = java_options
    # A progress bar is for a person at a terminal; in a log file its redraws are noise.
    settings["spark.ui.showConsoleProgress"] = str(sys.stderr.isatty()).lower()
    settings.update(spark_cfg.conf)
    if settings.get("spark.eventLog.enabled", "false").lower() == "true" and "spark.eventLog.dir" not in settings:
        events = config.path("spark_events")
        if "://" not in events:
            Path(events).mkdir(parents=True, exist_ok=True)   # Spark refuses to start without the folder
            events = Path(events).resolve().as_uri()
        settings["spark.eventLog.dir"] = events
    return settings, resolve_into


def build_session(config: Config, app_name: str = "encore", extra: dict[str, str] | None = None,
                  dump_class_archive: Path | None = None):
    """Start (or return the running) SparkSession configured for Delta and this profile; ``extra``
    settings go on top (``encore sql-server``: a Hive metastore and its read-only parser).
    ``dump_class_archive``: this JVM writes the class archive there when it exits (``build_class_archive``)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    check_java()
    settings, resolve_into = session_settings(config, dump_class_archive)
    settings.update(extra or {})
    os.environ.setdefault("PYSPARK_PYTHON", settings["spark.pyspark.python"])
    builder = SparkSession.builder.appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM failed to start: surface the one actionable line
        raise EncoreError(f"Spark failed to start ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
                          "check Java 17 and, on first run, access to Maven Central") from exc
    spark.sparkContext.setLogLevel(config.spark.log_level)
    ui = spark.sparkContext.uiWebUrl
    log.info("spark: %s started%s%s", app_name, f"; UI at {ui}" if ui else "",
             f"; event log in {settings['spark.eventLog.dir']}" if "spark.eventLog.dir" in settings else "")
    if resolve_into is not None:
        _record_resolved_jars(resolve_into, _packages(config))
    return spark
