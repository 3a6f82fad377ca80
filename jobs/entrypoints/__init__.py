"""Script entry points for launchers that run a file rather than a module (spark-submit)."""
