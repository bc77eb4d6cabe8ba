"""User-facing errors: the CLI and every stage turn them into one clear line and exit code 2."""


class DeltalabError(Exception):
    """A problem with the user's input (params, files, checkpoints) rather than a bug."""


class ConfigError(DeltalabError):
    """A params file has an unknown key, a wrong type or an out-of-range value."""


class CheckpointError(DeltalabError):
    """A checkpoint is missing, corrupt, or does not match what it is combined with."""


class DataError(DeltalabError):
    """A dataset or predictions file is missing, empty or malformed."""
