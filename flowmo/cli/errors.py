"""How the ``flowmo`` command reports a failure: :class:`CLIError`, the one-line description of
any exception, and the exit status (2: bad input, 1: anything else)."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A failure reported as one line; ``code`` is the exit status (2: bad input)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- errors
_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    CLIError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
    ValueError, TypeError, KeyError,
)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _describe(e: BaseException) -> str:
    """A one-line description of an exception."""
    from pydantic import ValidationError

    from flowmo.registry.spec_base import validation_message

    if isinstance(e, ValidationError):  # flowmo's own are one line already; any other told the same way
        return _one_line(validation_message(e))
    if isinstance(e, KeyError) and e.args:
        msg = str(e.args[0])
    else:
        msg = str(e)
    if isinstance(e, CLIError):
        return _one_line(msg)
    if not isinstance(e, _INPUT_ERRORS) or not msg:
        msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return _one_line(msg)


def _exit_code(e: BaseException) -> int:
    if isinstance(e, CLIError):
        return e.code
    return 2 if isinstance(e, _INPUT_ERRORS) else 1
