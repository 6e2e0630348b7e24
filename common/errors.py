"""The one exception type for user mistakes.

Library code raises :class:`CertkitError` (or a subclass) for anything a user can fix: a missing file,
a corrupt checkpoint, an option out of range, a model that does not fit the data. The CLI turns it into a
one-line ``Error: ...`` message and a non-zero exit code; anything else is a bug and keeps its traceback.
"""


class CertkitError(Exception):
    """A problem with the user's input (files, options, model/data combination)."""


def shape_text(shape) -> str:
    """A tensor shape as messages write it: ``1 x 28 x 28`` (``()`` for a scalar)."""
    return " x ".join(str(int(d)) for d in shape) or "()"
