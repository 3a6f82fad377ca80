"""Errors as the CLI reports them: ``EncoreError`` (a problem the user can fix; one line, exit 2),
the two kinds of it that a backfill over a date range reports and steps past instead of stopping
at, and ``describe``, the one line for any other exception (Spark, Delta, MLflow, Ray; exit 1)."""


import re


class EncoreError(Exception):
    """A problem the user can fix: bad config, bad path, bad input, failed quality gate."""


class NoDataForDate(EncoreError):
    """A date with nothing to process (no bronze rows): a range skips it and lists it."""


class DateHeldBack(EncoreError):
    """A date that failed its quality gate: nothing of it was published; a range reports it and goes on."""


# --- failures that are not EncoreErrors --------------------------------------------------------
# Spark, Delta, MLflow and Ray raise their own exceptions, with multi-line messages and JVM stack
# traces. The CLI turns each into one line saying what failed and what to do; the traceback goes
# to the log file (and to the terminal with --debug). Matched by class name, so this module
# imports none of those libraries.

DELTA_CONFLICTS = {"ConcurrentAppendException", "ConcurrentWriteException", "MetadataChangedException",
                   "ProtocolChangedException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
                   "ConcurrentTransactionException", "DeltaConcurrentModificationException"}


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def first_line(exc: BaseException) -> str:
    """The first non-blank line of the exception's message, without JVM prefixes, shortened."""
    text = str(exc).strip()
    line = next((x.strip() for x in text.splitlines() if x.strip()), "") or type(exc).__name__
    for prefix in ("An error occurred while calling", "py4j.protocol.Py4JJavaError:"):
        if line.startswith(prefix):
            line = next((x.strip() for x in text.splitlines()[1:] if x.strip()), line).lstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)): \S")


def _ray_cause(exc: BaseException) -> str:
    """The error raised inside a Ray task or actor, as ``Class: message``: a task's travels as its
    ``cause``; when Ray wraps it (Ray Data's UserCodeException, an actor that died in its constructor),
    it is the last ``Class: message`` line of the traceback text that is not Ray's own."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not type(cause).__module__.startswith("ray"):
        return f"{type(cause).__name__}: {first_line(cause)}"
    for text in (str(exc), str(cause or "")):
        found = [x.strip() for x in _ANSI.sub("", text).splitlines()
                 if _ERROR_LINE.match(x.strip()) and not x.strip().startswith(("ray.", "SystemException"))]
        if found:
            return found[-1] if len(found[-1]) <= 300 else found[-1][:297] + "..."
    return f"{type(exc).__name__}: {_ANSI.sub('', first_line(exc))}"


def describe(exc: BaseException) -> str:
    """One line: what went wrong and what to do, for an exception that is not an EncoreError."""
    names, line = _names(exc), first_line(exc)
    kind = type(exc).__name__
    if names & DELTA_CONFLICTS:
        return (f"another run wrote the same Delta table at the same time ({kind}), and the retries lost "
                "too: run this step again once the other run has finished")
    if "_delta_log" in line or "DELTA_" in line or "is not a Delta table" in line:
        return (f"a Delta table's log is missing or unreadable ({line}): restore the table's folder "
                "(with its _delta_log) from a backup, or rebuild the table with the step that writes it")
    if "Py4JNetworkError" in names or "Answer from Java side is empty" in line or "Java gateway" in line:
        return (f"the Spark JVM stopped ({line}): see the log for why; if it ran out of memory, raise "
                "spark.driver_memory")
    if "MlflowException" in names or type(exc).__module__.startswith("mlflow"):
        return (f"the MLflow store failed ({kind}: {line}): check mlflow.tracking_uri and that the store is "
                "reachable and writable")
    if type(exc).__module__.startswith("ray") or names & {"RayError", "RayTaskError", "RaySystemError"}:
        what = "a Ray actor could not start" if "RayActorError" in names else "a Ray task failed"
        return f"{what} ({_ray_cause(exc)}): the task's traceback is in the log"
    if isinstance(exc, MemoryError):
        return "out of memory in the Python process: give the step more memory or a smaller date"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}: check the path, its permissions and free space"
    return f"unexpected {kind}: {line}. This is a bug or a condition Encore does not know yet"
