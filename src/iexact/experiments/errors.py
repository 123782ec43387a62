"""The harness's usage error: what the command line reports with its usage and exit status 2."""


class UsageError(ValueError):
    """An argument (or a combination, or an output path) the run cannot take, named
    with what is allowed; found before anything trains."""
