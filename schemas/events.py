"""Raw-record contracts (JSON Schema files beside this module) and the Spark schemas derived from them.

Clean parses every scalar of a raw record as text and types it itself, so a wrong type becomes a
quarantine reason rather than a silent null; that is why the parse schemas are all strings.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from pyspark.sql.types import ArrayType, StringType, StructField, StructType

CORRUPT_COLUMN = "_corrupt_record"


@lru_cache(maxsize=None)
def load_contract(name: str) -> dict:
    """A contract by file stem: 'play_event' or 'catalog_entry'."""
    return json.loads(resources.files("schemas").joinpath(f"{name}.schema.json").read_text())


def _parse_type(spec: dict):
    if spec.get("type") == "array":
        item = spec["items"]
        return ArrayType(StructType([StructField(k, StringType()) for k in item["properties"]]))
    return StringType()


def record_schema(name: str) -> StructType:
    """Spark schema of a raw line's declared fields, each as text (nested arrays as arrays of text structs)."""
    props = load_contract(name)["properties"]
    return StructType([StructField(key, _parse_type(spec)) for key, spec in props.items()])


def parse_schema(name: str) -> StructType:
    """Spark schema for from_json over a raw line: ``record_schema`` plus the corrupt-record column."""
    return StructType(record_schema(name).fields + [StructField(CORRUPT_COLUMN, StringType())])


def field_docs(name: str) -> list[tuple[str, str, str]]:
    """(field, JSON type, description) rows for docs and `encore schema`."""
    contract = load_contract(name)
    required = set(contract.get("required", []))
    rows = []
    for key, spec in contract["properties"].items():
        types = spec.get("type")
        types = "|".join(types) if isinstance(types, list) else str(types)
        rows.append((key + (" (required)" if key in required else ""), types, spec.get("description", "")))
    return rows
