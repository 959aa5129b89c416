"""The one text normalisation that search uses for pages and for queries alike.

A page or a query becomes a list of terms: lower case, NFKC (ligatures, superscripts, full
width forms), no diacritics, line-break hyphenation joined, markdown and HTML markup dropped,
and LaTeX read the way people type it: ``\\theta`` becomes ``theta``, wrappers such as
``\\mathrm{}``, ``\\operatorname{}``, ``\\frac``, ``\\left``/``\\right`` and spacing vanish,
and Greek written as Unicode (θ) becomes its name. So ``Gamma(theta | alpha+1, beta+y)`` and
``\\operatorname {Gamma}(\\theta |\\alpha +1,\\beta +y)`` both read
``gamma theta alpha 1 beta y``.

:func:`tokenize` also returns where each term came from in the original text, which is how
snippets quote the page itself and mark the matched words.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache
from typing import NamedTuple

# Bump whenever the terms produced for a text change: an index made by another version is rebuilt.
NORMALIZER_VERSION = 2

GREEK_NAMES = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
    "sigma tau upsilon phi chi psi omega"
).split()
_GREEK_LOWER = "αβγδεζηθικλμνξοπρστυφχψω"
_GREEK_VARIANTS = {
    "ς": "sigma",
    "ϑ": "theta",
    "ϕ": "phi",
    "ϖ": "pi",
    "ϱ": "rho",
    "ϵ": "epsilon",
    "ϰ": "kappa",
    "ϐ": "beta",
}
GREEK_CHAR_NAMES: dict[str, str] = {
    **{c: n for c, n in zip(_GREEK_LOWER, GREEK_NAMES)},
    **{c.upper(): n for c, n in zip(_GREEK_LOWER, GREEK_NAMES) if c != "ς"},
    **_GREEK_VARIANTS,
}

# LaTeX commands that carry no word a reader would type: wrappers, sizing, spacing, relations
# written as symbols, accents, and the fraction wrappers (people type a/b, not "frac").
SILENT_COMMANDS = frozenset(
    """
    frac dfrac tfrac cfrac left right middle big Big bigg Bigg bigl bigr Bigl Bigr biggl biggr Biggl Biggr
    quad qquad displaystyle textstyle scriptstyle scriptscriptstyle limits nolimits
    mathrm mathbf mathit mathsf mathtt mathcal mathbb mathfrak mathscr mathnormal boldsymbol bm pmb
    operatorname operatornamewithlimits mathop text textrm textbf textit textsf texttt textnormal textup emph mbox hbox
    cdot cdots ldots dots dotsc dotsb vdots ddots times div ast star circ bullet
    le leq ge geq ne neq lt gt leqslant geqslant ll gg approx equiv sim simeq cong propto
    pm mp to mapsto rightarrow leftarrow Rightarrow Leftarrow leftrightarrow Leftrightarrow longrightarrow
    Longrightarrow implies iff colon mid vert Vert lvert rvert lVert rVert langle rangle lfloor rfloor lceil rceil
    lbrace rbrace lbrack rbrack xrightarrow xleftarrow
    hat widehat bar overline underline tilde widetilde vec dot ddot check breve acute grave
    overbrace underbrace stackrel overset underset prime backslash
    nonumber notag hline cline toprule midrule bottomrule displaylines phantom hphantom vphantom
    in notin
    """.split()
)
COMMAND_ALIASES = {
    "varepsilon": "epsilon",
    "vartheta": "theta",
    "varphi": "phi",
    "varpi": "pi",
    "varrho": "rho",
    "varsigma": "sigma",
    "varkappa": "kappa",
    "infty": "infinity",
    "top": "t",
    "intercal": "t",
    "transpose": "t",
}
WORD_ALIASES = {"inf": "infinity", "infty": "infinity"}  # how people type the symbol
SYMBOL_NAMES = {"∑": "sum", "∏": "prod", "∫": "int", "√": "sqrt", "∞": "infinity", "∂": "partial", "∇": "nabla"}

_WORD = r"[^\W_]+(?:(?:\u00ad[ \t]*|-[ \t]*\r?\n[ \t]*(?=[a-zß-ÿ]))[^\W_]+)*"
_HTML_TAGS = (
    "a|abbr|b|big|blockquote|br|caption|center|code|col|colgroup|dd|div|dl|dt|em|figcaption|figure|font|"
    "h[1-6]|hr|i|img|li|math|ol|p|pre|s|small|span|strong|sub|sup|table|tbody|td|tfoot|th|thead|tr|u|ul"
)
_SCANNER = re.compile(
    r"(?P<skip><!--.*?-->"  # HTML comments (page markers)
    r"|<\|ref\|>.*?<\|/ref\|>|<\|det\|>.*?<\|/det\|>|<\|[a-z_/]{1,20}\|>"  # DeepSeek grounding tags
    rf"|</?(?:{_HTML_TAGS})\b[^<>]{{0,300}}>"  # HTML tags (a bare '<' in maths is left alone)
    r"|\]\([^)\s]{0,500}\)"  # the URL half of a markdown link or image
    # commands whose argument is no text
    r"|\\(?:begin|end|label|tag|ref|eqref|cite|hspace|vspace|color)\*?\s*\{[^{}]{0,100}\}"
    r"|\\[^a-zA-Z])"  # escaped characters, \( \[ \, \\ and friends
    r"|(?P<cmd>\\[a-zA-Z]+)\*?"
    r"|(?P<entity>&(?:[a-zA-Z]{2,10}|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});)"
    rf"|(?P<symbol>[{''.join(SYMBOL_NAMES)}])"
    rf"|(?P<word>{_WORD})",
    re.DOTALL,
)
_GREEK_SPLIT = re.compile("([" + "".join(GREEK_CHAR_NAMES) + "])")
_LETTER_DIGITS = re.compile(r"^([a-z])([0-9]+)$")  # x2, a11: a variable with its index or power
_DIGITS_LETTERS = re.compile(r"^([0-9]+)([a-z]+)$")  # 2pi, 3x: a coefficient and what it multiplies
_GREEK_DIGITS = re.compile(r"^(" + "|".join(GREEK_NAMES) + r")([0-9]+)$")  # alpha1
_DIFFERENTIAL = re.compile(
    r"^(d)([a-np-z]|" + "|".join(GREEK_NAMES) + r")$"
)  # dx, dθ: \mathrm{d} x as typed (not "do")


class Token(NamedTuple):
    """A term and the span of the original text it was read from."""

    term: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Every term of ``text`` with its source span, in order."""
    tokens: list[Token] = []
    for match in _SCANNER.finditer(text):
        kind = match.lastgroup
        if kind == "skip":
            continue
        start, end = match.span()
        for term in _terms_of(kind, match.group(kind)):
            tokens.append(Token(term, start, end))
    return tokens


def tokenize_fast(text: str) -> list[tuple[str, int, int]]:
    """:func:`tokenize` as plain ``(term, start, end)`` tuples, inlined for speed (every hit's snippet uses it)."""
    tokens: list[tuple[str, int, int]] = []
    append = tokens.append
    for match in _SCANNER.finditer(text):
        word = match.group("word")
        if word is not None:
            found = word_terms(word)
        elif match.lastgroup == "skip":
            continue
        else:
            found = _terms_of(match.lastgroup, match.group(match.lastgroup))
        if found:
            start, end = match.span()
            for term in found:
                append((term, start, end))
    return tokens


def terms(text: str) -> list[str]:
    """The terms of ``text`` in order (what the index stores and a query looks for)."""
    out: list[str] = []
    for match in _SCANNER.finditer(text):
        kind = match.lastgroup
        if kind != "skip":
            out.extend(_terms_of(kind, match.group(kind)))
    return out


def normalize(text: str) -> str:
    """The terms of ``text`` joined by single spaces."""
    return " ".join(terms(text))


def _terms_of(kind: str | None, value: str) -> tuple[str, ...]:
    if kind == "word":
        return word_terms(value)
    if kind == "cmd":
        return command_terms(value[1:])
    if kind == "symbol":
        return (SYMBOL_NAMES[value],)
    if kind == "entity":
        return tuple(terms(html.unescape(value))) if value not in ("&amp;", "&lt;", "&gt;", "&nbsp;") else ()
    return ()


@lru_cache(maxsize=512)
def command_terms(name: str) -> tuple[str, ...]:
    if name in SILENT_COMMANDS:
        return ()
    name = COMMAND_ALIASES.get(name, name).lower()
    return (COMMAND_ALIASES.get(name, name),)


@lru_cache(maxsize=200_000)
def word_terms(word: str) -> tuple[str, ...]:
    """Terms of one word as the scanner found it (may hold soft or line-break hyphens)."""
    if "\u00ad" in word or "-" in word:
        word = re.sub(r"[\u00ad\s-]+", "", word)
    if word.isascii():
        word = word.lower()
    else:
        word = _fold(word)
        if _GREEK_SPLIT.search(word):
            return tuple(t for part in _GREEK_SPLIT.split(word) for t in _split_part(GREEK_CHAR_NAMES.get(part, part)))
    return _split_part(word)


def _fold(word: str) -> str:
    """NFKC, case fold, and drop diacritics (Übung -> ubung), keeping Greek letters intact."""
    word = unicodedata.normalize("NFKC", word).casefold()
    if word.isascii():
        return word
    decomposed = unicodedata.normalize("NFD", word)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped)


def _split_part(part: str) -> tuple[str, ...]:
    if not part:
        return ()
    if part.isalpha():
        differential = _DIFFERENTIAL.match(part)
        if differential:
            return differential.groups()
        return (WORD_ALIASES.get(part, part),)
    if not any(c.isdigit() for c in part):
        return (part,) if part.isalnum() else tuple(re.findall(r"[^\W_]+", part))
    for pattern in (_LETTER_DIGITS, _DIGITS_LETTERS, _GREEK_DIGITS):
        match = pattern.match(part)
        if match:
            return match.groups()
    return (part,) if part.isalnum() else tuple(re.findall(r"[^\W_]+", part))
