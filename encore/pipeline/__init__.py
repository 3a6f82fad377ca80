"""The pipeline: the step registry and everything built from it (CLI, ``night``, cluster submission)."""
