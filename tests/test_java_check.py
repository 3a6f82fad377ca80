"""Spark needs Java 17+: a missing or old Java stops with one line naming the fix."""
from __future__ import annotations

import pytest

from encore.errors import EncoreError
from encore.spark import check_java


def _fake_java(home, version_line: str):
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return home


@pytest.mark.parametrize("line, found", [('openjdk version "11.0.22" 2024-01-16', "11"),
                                         ('java version "1.8.0_402"', "8")])
def test_old_java_is_refused(tmp_path, monkeypatch, line, found):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "jdk", line)))
    with pytest.raises(EncoreError, match=f"Java 17\\+ is required, found Java {found}"):
        check_java()


def test_missing_java_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(EncoreError, match="was not found: install OpenJDK 17"):
        check_java()


def test_java_17_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "jdk", 'openjdk version "17.0.15" 2025-04-15')))
    check_java()
