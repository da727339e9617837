"""The one user-facing error type.

An :class:`InputError` is raised for anything a user can fix (a bad file, a missing
column, an impossible option). The CLI prints it as one clear line and exits with
status 1, without a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from os import PathLike


class InputError(Exception):
    """Bad input, reported with where it is and what was expected.

    Parameters
    ----------
    message
        What is wrong, in words a user understands.
    path
        The file (or directory) concerned, if any.
    field
        Column, block, line, header field or option name concerned, if any.
    expected
        What would have been valid, if that helps the user.

    Examples
    --------
    >>> str(InputError("not a number", path="p.star", field="rlnVoltage (line 12)", expected="a float"))
    'p.star: rlnVoltage (line 12): not a number (expected a float)'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.field = field
        self.expected = expected
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.field) if p]
        text = ": ".join(parts + [self.message])
        if self.expected:
            text += f" (expected {self.expected})"
        return text

    def with_path(self, path: str | PathLike) -> InputError:
        """The same error naming ``path`` when it names no file yet (``raise err.with_path(p) from None``).

        >>> str(InputError("bad image name", field="rlnImageName").with_path("p.star"))
        'p.star: rlnImageName: bad image name'
        """
        if self.path is not None:
            return self
        return InputError(self.message, path=path, field=self.field, expected=self.expected)
