"""The one exception type the CLI turns into a single readable line (and exit code 2), and the two
kinds of it that a backfill over a date range reports and steps past instead of stopping at."""


class EncoreError(Exception):
    """A problem the user can fix: bad config, bad path, bad input, failed quality gate."""


class NoDataForDate(EncoreError):
    """A date with nothing to process (no bronze rows): a range skips it and lists it."""


class DateHeldBack(EncoreError):
    """A date that failed its quality gate: nothing of it was published; a range reports it and goes on."""
