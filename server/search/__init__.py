"""Full-text search over the library: one SQLite FTS5 index per corpus, BM25 ranking.

The index (``CORPUS/index.sqlite``) is derived data: every page's clean markdown, normalised by
:mod:`server.search.normalize`, in a contentless FTS5 table, beside a ``pages`` table that keeps the
page text (for snippets) and its terms (for proximity and exact deletes), both compressed, a ``terms``
table for near spellings, and each book's printed labels and contents (:mod:`.books`).
Pages are added as the runner writes them, so a book can be searched while its OCR runs;
``reindex`` rebuilds everything from the ``.mmd`` files, and an index of an older format is rebuilt
so when it is next opened.

A query runs as a ladder of ever looser match tiers, and every hit of a tier ranks above every
hit of the next; a looser tier is only tried while the stricter ones found too few pages:

  3  exact        every term (and quoted phrase) as typed, after normalisation
  2  corrected    terms missing from the index vocabulary replaced by near spellings
  1  fuzzy        every term also matched to near spellings (finds OCR errors like posteri0r)
  0  partial      all terms but one

Near spellings (rapidfuzz, 1 edit for 4-7 letters, 2 from 8) of a term the index lacks are kept
unless they are misreadings of a far more common one; an indexed term is only widened to spellings
far rarer or far more common than itself (posteri0r beside posterior; never word4 beside word5).
Quoted phrases skip tier 1. ``total`` counts the pages of every tier (the same at any offset). In large
libraries a single term on over a fifth of the pages (x, 1, i in formulas) is left out of the
FTS5 match, which it would slow down, and counts only in the ranking.

A query typed as a phrase or formula (four terms or more, stopwords counted) splits each tier:
pages where its terms stand together (FTS5 NEAR) come first. Within a step, pages are ordered by
BM25 over the query's terms (a term's accepted spellings counted as one term) times a proximity
factor that rewards the terms close together, in the typed order, and the whole typed run of
words (stopwords too) found as typed. ``score`` is ``tier`` + 0.5 where the terms stand together
+ 0.5 * relevance / (1 + relevance), so scores fall down the list and the integer part is the tier.

Modules: :mod:`.index` (the :class:`SearchIndex`: writes, rebuild and self-repair, searches,
runner listeners), :mod:`.store` (the SQLite file: schema, connections, checks, row ids),
:mod:`.query` (parsing),
:mod:`.vocabulary` (term page counts, near spellings), :mod:`.tiers` (the ladder of match
expressions), :mod:`.ranking` (running the ladder: BM25, relevance, proximity),
:mod:`.snippets`, :mod:`.results` (what a search returns), :mod:`.books` (each book's labels and
contents, kept for its hits).
"""

from ocr_backend.errors import SearchIndexError
from server.search.index import SearchIndex, index_listener, search_library, sync_book_quietly
from server.search.query import STOPWORDS, parse_query
from server.search.results import SearchHit, SearchResponse

__all__ = [
    "STOPWORDS",
    "SearchHit",
    "SearchIndex",
    "SearchIndexError",
    "SearchResponse",
    "index_listener",
    "parse_query",
    "search_library",
    "sync_book_quietly",
]
