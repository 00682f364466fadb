"""Errors that end a training run with a message instead of a traceback."""


class TrainingAborted(RuntimeError):
    """The run cannot go on (too many unreadable files, too many non-finite steps, ...)."""
