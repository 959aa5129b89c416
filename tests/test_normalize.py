"""The one normalisation shared by the index and queries: what a typed query must meet on a page."""

from __future__ import annotations

import pytest

from server.search.normalize import normalize, tokenize


@pytest.mark.parametrize(
    ("page", "typed"),
    [
        (r"\operatorname {Gamma}(\theta |\alpha +1,\beta +y)", "Gamma(theta | alpha+1, beta+y)"),
        (r"\[\frac{1}{\sqrt{2\pi}} e^{-x^{2}/2}\]", "1/sqrt(2pi) e^(-x^2/2)"),
        (r"\left( \mathrm{Var}(X) \right) \quad \text{ and } \mathbb{E}[X]", "(Var(X)) and E[X]"),
        (
            r"\( p(\lambda \mid y) \propto \lambda^{\alpha-1} e^{-\beta\lambda} \)",
            "p(lambda | y) = lambda^(alpha-1) e^(-beta lambda)",
        ),
        (r"\sum_{i=1}^{n} x_{i} \cdot \hat{\mu}", "sum_(i=1)^n x_i mu"),
        (r"\varepsilon \leq \infty", "epsilon infinity"),
    ],
)
def test_latex_reads_as_typed(page: str, typed: str) -> None:
    assert normalize(page) == normalize(typed)


def test_latex_commands_become_words_and_wrappers_vanish() -> None:
    assert normalize(r"\operatorname {Gamma}(\theta |\alpha +1,\beta +y)") == "gamma theta alpha 1 beta y"
    assert normalize(r"\begin{pmatrix} a & b \\ c & d \end{pmatrix}") == "a b c d"
    assert normalize(r"\frac{\alpha}{\beta}") == "alpha beta"


@pytest.mark.parametrize(
    ("unicode", "latex"),
    [
        ("θ", r"\theta"),
        ("Γ(α, β)", r"\Gamma(\alpha, \beta)"),
        ("ϵ", r"\varepsilon"),
        ("µ", r"\mu"),
        ("𝜃", r"\theta"),
        ("2π", r"2\pi"),
        ("λ₁", r"\lambda_1"),
    ],
)
def test_greek_letters_match_their_names(unicode: str, latex: str) -> None:
    assert normalize(unicode) == normalize(latex) != ""


def test_ligatures_and_compatibility_forms() -> None:
    assert normalize("ﬁnd the eﬀect of ﬂow") == "find the effect of flow"
    assert normalize("x² ＋ Ｆｕｌｌ") == normalize("x^2 + full") == "x 2 full"
    assert normalize("½") == "1 2"


def test_hyphenation_at_line_ends_is_joined() -> None:
    assert normalize("the posterior distri-\nbution is") == "the posterior distribution is"
    assert normalize("soft\u00adhyphen") == "softhyphen"
    assert normalize("a right-hand side") == "a right hand side"  # a real hyphen stays a word break
    assert normalize("see Section-\nThree") == "see section three"  # no join before a capital


def test_markup_is_dropped() -> None:
    page = "# Title\n\n**Bold** and _it_ [a link](http://example.com/x) ![alt](images/0_0.jpg) <center>b)</center> <!-- page 3 --> &amp; &alpha;"
    assert normalize(page) == "title bold and it a link alt b alpha"
    assert normalize("<|ref|>text<|/ref|><|det|>[[115, 166, 465, 201]]<|/det|>\nHello") == "hello"
    assert normalize("<table><tr><td>sin φ</td></tr></table>") == "sin phi"


def test_a_bare_less_than_in_maths_keeps_the_text() -> None:
    assert normalize("if x<y and z>w") == "if x y and z w"


def test_case_and_diacritics_fold() -> None:
    assert normalize("Übungsblatt STRASSE Straße") == "ubungsblatt strasse strasse"


def test_ocr_errors_stay_one_term_but_variables_split() -> None:
    assert normalize("posteri0r") == "posteri0r"
    assert normalize("x2 a11 2x alpha1 h2o") == "x 2 a 11 2 x alpha 1 h2o"


def test_tokens_point_back_to_the_original_text() -> None:
    text = r"We set \theta = ﬁve."
    spans = [(t.term, text[t.start : t.end]) for t in tokenize(text)]
    assert spans == [("we", "We"), ("set", "set"), ("theta", r"\theta"), ("five", "ﬁve")]
