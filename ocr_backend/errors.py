"""Errors a user can act on. Each message says what went wrong and what to do next."""


class BookOcrError(Exception):
    """Base class: the message is shown to the user as one line."""


class InputError(BookOcrError):
    """The input file or folder cannot be used as a book (nothing was written)."""


class EngineError(BookOcrError):
    """An engine cannot run at all (missing dependency, account, deployment)."""
