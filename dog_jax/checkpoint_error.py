"""The package's one checkpoint error, and the one-line quote of a library's error it carries.

Its own module so that every checkpoint reader and writer (``dog_jax.checkpoints``,
``dog_jax.orbax_items``, the trainer's ``dog_jax.train.checkpoint``) raises the same class without
importing one another.
"""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read, written or resumed; ``str(error)`` is one line for the user.

    The one checkpoint error of the package: raised by the checkpoint reader (conversion, analysis,
    export, evaluation) and by the trainer's checkpoints; ``dog_jax.checkpoints`` and
    ``dog_jax.train.checkpoint`` re-export it.
    """


def first_line(text: str) -> str:
    """An error text's first line, at most 160 characters: what a one-line message quotes of a library's error."""
    line = text.strip().splitlines()[0] if text.strip() else "unreadable"
    return line[:160]
