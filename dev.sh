#!/usr/bin/env bash
# One entry point for a fresh machine (Python 3.11+, Java 17+):
#   ./dev.sh demo   set up .venv, then run the pipeline on embedded synthetic data
#   ./dev.sh test   set up .venv, then run the test suite (what CI runs)
#   ./dev.sh test fast   only the unit tier: no JVM, no Ray, no whole night (minutes)
# Set-up is idempotent: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "dev.sh: $*" >&2; exit 2; }

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  die "Python 3.11+ is required: install python3.11 (with venv) or set PYTHON=/path/to/python3.11"
}

check_java() {
  local java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  command -v "$java" >/dev/null 2>&1 || die "Java 17+ is required and was not found: install OpenJDK 17 (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
  local major
  major=$("$java" -version 2>&1 | sed -nE 's/.*version "([0-9]+)(\.([0-9]+))?.*/\1 \3/p' | head -1)
  set -- $major
  [ "${1:-0}" = "1" ] && set -- "${2:-0}"
  [ "${1:-0}" -ge 17 ] || die "Java 17+ is required, found Java ${1:-unknown}: install OpenJDK 17 or point JAVA_HOME at it"
}

setup() {
  check_java
  local py stamp want
  py=$(pick_python)
  [ -x .venv/bin/python ] || "$py" -m venv .venv || die "could not create .venv: install the venv module (apt-get install python3-venv)"
  stamp=.venv/.encore-installed
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "dev.sh: installing encore and its dependencies into .venv (first run: a few minutes)" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test,airflow]"
    echo "$want" > "$stamp"
  fi
  # Resolves Delta's jars from Maven Central once (into .venv/encore-jars), then works offline; it also
  # leaves a class archive there that halves the CPU each Spark JVM spends starting (encore/spark.py).
  if [ ! -f .venv/encore-jars/jars.txt ] || ! compgen -G ".venv/encore-jars/spark-classes-*.jsa" >/dev/null; then
    .venv/bin/encore setup
  fi
}

case "${1:-}" in
  demo) setup; shift; exec .venv/bin/encore --profile "${ENCORE_PROFILE:-demo}" "$@" demo ;;
  test)
    setup; shift
    if [ "${1:-}" = fast ]; then shift; exec .venv/bin/python -m pytest -m unit "$@"; fi
    # Two workers side by side (tests/conftest.py says which tests share one); `-n 0` runs in one process.
    exec .venv/bin/python -m pytest -n "${ENCORE_TEST_WORKERS:-2}" --dist loadfile "$@" ;;
  setup) setup ;;
  *) echo "usage: ./dev.sh demo | test [fast] [pytest args] | setup" >&2; exit 2 ;;
esac
