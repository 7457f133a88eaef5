"""One root for every error xtalbench raises on purpose.

Library code raises subclasses of `XtalbenchError` with a message that names the file, the
record and the field; only `xtalbench.cli.main` turns them into an exit code (2) and a one-line
message. Anything else reaching the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class XtalbenchError(Exception):
    """Root of the project's errors: a problem with the user's input, params or environment."""


class ParamsError(XtalbenchError, ValueError):
    """A params.yaml section that does not validate: names the key, the value and what is allowed."""


class InputError(XtalbenchError, ValueError):
    """An input file that cannot be read: names the file and the cause."""

    def __init__(self, path: object, cause: str):
        self.path, self.cause = str(path), cause
        super().__init__(f"{path}: {cause}")


class MissingInputError(XtalbenchError, FileNotFoundError):
    """An input a stage needs is not there yet: says which stage writes it."""
