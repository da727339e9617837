"""The user-facing error type, re-exported for the file-format layer.

:class:`InputError` lives in :mod:`vitrify.errors` (below every layer), so that ``core``
raises it without importing ``io``; ``vitrify.io.errors.InputError`` is the same class.
"""

from vitrify.errors import InputError

__all__ = ["InputError"]
