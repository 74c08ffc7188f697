"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class PipelineError(Exception):
    """Bad input, bad config or a missing model; the message says what is wrong."""
