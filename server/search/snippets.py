"""Snippets: the part of a page around its best match, matched words marked with **…**."""

from __future__ import annotations

from server.search.normalize import tokenize_fast
from server.search.query import QueryGroup

SNIPPET_CHARS = 220


def make_snippet(text: str, groups: list[QueryGroup], width: int = SNIPPET_CHARS) -> str:
    """The part of the page around its best match, matched words marked with **…**."""
    tokens = tokenize_fast(text)  # (term, start, end)
    found = _matches(tokens, groups)  # token position -> the groups it matches
    matched = [(found[i], tokens[i][1], tokens[i][2]) for i in sorted(found)]
    if not matched:
        return _clean(text[:width]) + ("…" if len(text) > width else "")
    lo, hi = _best_span(matched, width)
    pad = max(0, width - (hi - lo)) // 2
    start = _cut_left(text, max(0, lo - pad))
    end = _cut_right(text, min(len(text), hi + pad + max(0, pad - lo)))
    marked: list[tuple[int, int]] = []  # runs of matched terms with no other term between them
    follows_match = False
    for position, (_, token_start, token_end) in enumerate(tokens):
        if token_start < start or token_end > end:
            continue
        if position not in found:
            follows_match = False
        elif follows_match:
            marked[-1] = (marked[-1][0], max(marked[-1][1], token_end))
        else:
            marked.append((token_start, token_end))
            follows_match = True
    parts, cursor = [], start
    for a, b in marked:
        parts.append(_clean(text[cursor:a]))
        parts.append(f"**{_clean(text[a:b])}**")
        cursor = b
    parts.append(_clean(text[cursor:end]))
    body = "".join(parts).strip()
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")


def _matches(tokens: list[tuple[str, int, int]], groups: list[QueryGroup]) -> dict[int, set[int]]:
    """Token positions that match a group: a term, or a whole run of a quoted phrase where the page has
    one (its words one by one only where it has none, as a partial match does)."""
    terms = [token[0] for token in tokens]
    found: dict[int, set[int]] = {}
    for index, group in enumerate(groups):
        runs = [v for v in group.variants if len(v) > 1]
        words = {v[0] for v in group.variants if len(v) == 1}
        hits = [p for p, term in enumerate(terms) if term in words]
        for variant in runs:
            n = len(variant)
            for p, term in enumerate(terms[: len(terms) - n + 1]):
                if term == variant[0] and tuple(terms[p : p + n]) == variant:
                    hits.extend(range(p, p + n))
        if runs and not hits:
            loose = {term for variant in runs for term in variant}
            hits = [p for p, term in enumerate(terms) if term in loose]
        for p in hits:
            found.setdefault(p, set()).add(index)
    return found


def _best_span(matched: list[tuple[set[int], int, int]], width: int) -> tuple[int, int]:
    """The character span, at most ``width`` long, covering the most query groups (then the shortest)."""
    best = (0, 0, matched[0][1], matched[0][2])
    for i, (_, first_start, _) in enumerate(matched[:400]):
        seen: set[int] = set()
        for kinds, _, token_end in matched[i:]:
            if token_end - first_start > width:
                break
            seen |= kinds
            key = (len(seen), -(token_end - first_start), first_start, token_end)
            if key[:2] > best[:2]:
                best = key
    return best[2], best[3]


def _cut_left(text: str, at: int) -> int:
    space = text.rfind(" ", max(0, at - 20), at + 1)
    return space + 1 if space > 0 else at


def _cut_right(text: str, at: int) -> int:
    space = text.find(" ", at, at + 20)
    return space if space != -1 else at


def _clean(piece: str) -> str:
    """Whitespace runs to one space (ends kept), and no stray ** from the page's own markdown."""
    collapsed = " ".join(piece.replace("**", "").split())
    if not collapsed:
        return " " if piece else ""
    return (" " if piece[0].isspace() else "") + collapsed + (" " if piece[-1].isspace() else "")
