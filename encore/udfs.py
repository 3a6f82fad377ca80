"""Encore's own JVM functions: the Java sources in ``encore/java``, their jar, and their registration.

The jar is compiled on first use with Janino, the compiler Spark ships for its generated code, so a
JRE is enough (no JDK, no build step at install). It lands beside Delta's jars, named by a hash of
the sources and the Spark version, and ``encore.spark`` puts it on ``spark.jars``, which also ships
it to a cluster's executors. A source edit or a Spark upgrade builds a new one.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import zipfile
from pathlib import Path

from encore.errors import EncoreError

SOURCES = Path(__file__).parent / "java"
_COMPILER = "org.codehaus.commons.compiler.samples.CompilerDemo"


def _spark_jars() -> list[Path]:
    import pyspark
    return sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar"))


def jar_name() -> str:
    import pyspark
    digest = hashlib.sha256(pyspark.__version__.encode())
    for source in sorted(SOURCES.glob("*.java")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return f"encore-udfs-{digest.hexdigest()[:12]}.jar"


def build_jar(jar_dir: Path, java: str) -> Path:
    """The jar of ``encore/java`` in ``jar_dir``, compiled first if this version of it is not there yet.

    Safe against a concurrent build: each builds in its own temp folder and renames its jar into place.
    """
    jar = jar_dir / jar_name()
    if jar.is_file():
        return jar
    jar_dir.mkdir(parents=True, exist_ok=True)
    classpath = os.pathsep.join(str(p) for p in _spark_jars())
    with tempfile.TemporaryDirectory(dir=jar_dir, prefix=".build-") as build:
        classes = Path(build) / "classes"
        classes.mkdir()
        done = subprocess.run([java, "-cp", classpath, _COMPILER, "-d", str(classes), "-classpath", classpath,
                               *[str(p) for p in sorted(SOURCES.glob("*.java"))]],
                              capture_output=True, text=True)
        built = sorted(classes.rglob("*.class"))
        if done.returncode != 0 or not built:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise EncoreError(f"could not compile Encore's JVM functions ({SOURCES}) with Spark's Janino: "
                              f"{detail[-1] if detail else 'no classes written'}; reinstall pyspark or the project")
        staged = Path(build) / jar.name
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: encore (janino)\n\n")
            for cls in built:
                out.write(cls, cls.relative_to(classes).as_posix())
        os.replace(staged, jar)
    return jar


NON_SCALAR = "_non_scalar"


def parse_text_fields(spark, column, schema, watched: tuple[str, ...] = ()):
    """A JSON-lines column to a struct of ``schema``'s text fields, null where a line is not a JSON
    object. The same values as ``from_json(column, schema)`` in about half the time (FlatJsonRecord.java).

    With ``watched`` fields the struct also has ``NON_SCALAR``: those of them whose value is a JSON
    object, array or boolean, as ``name:kind`` joined by commas (``user_id:array``), else null."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    if not all(isinstance(f.dataType, StringType) for f in schema.fields):
        raise EncoreError("parse_text_fields reads text fields only; use from_json for nested schemas")
    names = [f.name for f in schema.fields]
    watched = tuple(w for w in watched if w in names)
    name = "encore_text_fields_" + hashlib.sha256((",".join(names) + "|" + ",".join(watched)).encode()).hexdigest()[:10]
    if not spark.catalog.functionExists(name):
        gateway, jvm = spark.sparkContext._gateway, spark.sparkContext._jvm

        def strings(values):
            array = gateway.new_array(jvm.java.lang.String, len(values))
            for i, value in enumerate(values):
                array[i] = value
            return array
        try:
            function = jvm.encore.jvm.FlatJsonRecord(strings(names), strings(watched))
        except TypeError as exc:   # py4j: the class is not on the classpath (a JavaPackage, not callable)
            raise EncoreError("Encore's JVM functions are not on Spark's classpath: start Spark through "
                              "encore.spark.build_session, or add the jar from encore/udfs.py to spark.jars") from exc
        returned = StructType(schema.fields + [StructField(NON_SCALAR, StringType())]) if watched else schema
        spark._jsparkSession.udf().register(name, function, spark._jsparkSession.parseDataType(returned.json()))
    # As bytes: the function scans plain lines without decoding them to Java text first.
    return F.call_function(name, (F.col(column) if isinstance(column, str) else column).cast("binary"))
