"""The data layer's error: what its callers (the trainer, the CLIs) catch to print one line."""


class DatasetError(ValueError):
    """A dataset cannot be used as configured; the message is one line that says how to fix it."""
