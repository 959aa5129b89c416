"""Every error a user can act on, in one place. Each message says what went wrong and what to do next.

The CLI prints one as a single line (exit code 2); the MCP server turns one into a tool error the model reads.
"""

from __future__ import annotations


class BookOcrError(Exception):
    """Base class: the message is shown to the user as one line."""


# --- the input -------------------------------------------------------------------------------------
class InputError(BookOcrError):
    """The input file or folder cannot be used as a book (nothing was written)."""


class PathNotAllowedError(BookOcrError):
    """The path lies outside the folders the server was allowed to read."""


class FileTooLargeError(BookOcrError):
    """The input is over the server's size limit."""


# --- engines ---------------------------------------------------------------------------------------
class EngineError(BookOcrError):
    """An engine cannot run at all (missing dependency, account, deployment), or was given a bad option."""


class RenderTimeoutError(BookOcrError):
    """Rendering a page did not finish in time (a thread inside MuPDF cannot be stopped)."""


# --- the library -----------------------------------------------------------------------------------
class UnknownBookError(BookOcrError):
    """No book of that id in the library."""


class PageRangeError(BookOcrError):
    """A page number or range outside the book, or one that cannot be read."""


class UnknownLabelError(PageRangeError):
    """A printed page label that no page carries, or that several pages carry."""


class BookLockedError(BookOcrError):
    """Another run is writing the book."""


class DamagedBookError(BookOcrError):
    """A book whose manifest is unreadable or incomplete: only that book is affected."""

    @classmethod
    def of(cls, book_id: str, problem: str) -> DamagedBookError:
        return cls(
            f"book {book_id!r} is damaged: its manifest.json {problem}; rebuild it from the page files and the "
            f"source with `bookocr ocr --repair {book_id}` (or --repair SOURCE --book {book_id}), or start it afresh "
            "with `bookocr ocr SOURCE --replace`"
        )


class DiskFullError(BookOcrError):
    """No space left for a corpus file (ENOSPC / EDQUOT): the write was undone."""


class BookConflictError(BookOcrError):
    """The book id already holds a different file."""


class SearchIndexError(BookOcrError):
    """The search index cannot be used."""
