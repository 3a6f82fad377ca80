"""The one exception type the CLI turns into a single readable line (and exit code 2)."""


class EncoreError(Exception):
    """A problem the user can fix: bad config, bad path, bad input, failed quality gate."""
