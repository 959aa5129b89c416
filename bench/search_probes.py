"""Probe books and probe queries for ``bench_search.py``.

Two books come from ``../shared/testdata`` at run time (their text layers, through the real
runner); nothing of their text is stored here. Probes over them are sampled from the imported
pages with a fixed seed: exact phrases, the same with 1-2 typos, and 2-3 content words that
only one page holds. The third book is written here: DeepSeek-style pages (``\\( \\)``,
``\\[ \\]``, ``\\frac``, ``\\operatorname``, ``\\left``/``\\right``) whose formulas the math
probes type the way people type them.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from server.search import STOPWORDS
from server.search.normalize import normalize, terms

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
PROBE_PDFS = {
    "whitehead": TESTDATA / "gitenberg_whitehead_41568" / "41568-pdf.pdf",
    "bws-ch2": TESTDATA / "olmocr_tests" / "gnarly_pdfs" / "bws_book_ch2.pdf",
}
MATH_BOOK = "bayes-deepseek"
CONTENT_MAX_PAGES = 4  # a content word is on at most this many probe-book pages (it says what the page is about)


@dataclass
class Probe:
    kind: str  # word, phrase, typo, content, math, nohit
    query: str
    book: str | None  # expected book and page (None for nohit)
    page: int | None


# --- the DeepSeek-style math book: (page text, [typed queries that must find it]) ---------------
MATH_PAGES: list[tuple[str, list[str]]] = [
    (
        "## 2.4 The exponential model with a Gamma prior\n\n"
        "Suppose the waiting times \\( y_{1}, \\ldots, y_{n} \\) are independent and exponential with rate \\( \\lambda \\). "
        "The likelihood is\n\n\\[\np(y \\mid \\lambda)=\\lambda^{n} e^{-\\lambda \\sum_{i=1}^{n} y_{i}}\n\\]\n\n"
        "and the conjugate prior for the exponential rate is \\( \\lambda \\sim \\operatorname {Gamma}(\\alpha ,\\beta) \\). "
        "Multiplying prior and likelihood gives the posterior\n\n"
        "\\[\n\\operatorname {Gamma}(\\lambda |\\alpha +n,\\beta +\\sum_{i=1}^{n} y_{i})\n\\]\n\n"
        "so that \\( \\alpha \\) counts prior observations and \\( \\beta \\) their total waiting time.",
        ["Gamma(lambda | alpha+n, beta+sum y_i)", "lambda^n e^(-lambda sum y_i)"],
    ),
    (
        "## 3.1 The normal distribution\n\nA random variable \\( X \\) is normal with mean \\( \\mu \\) and variance "
        "\\( \\sigma^{2} \\) when its density is\n\n\\[\nf(x)=\\frac{1}{\\sqrt{2 \\pi \\sigma^{2}}} \\exp \\left(-\\frac{(x-\\mu)^{2}}{2 \\sigma^{2}}\\right)\n\\]\n\n"
        "The standardised variable \\( Z=\\frac{X-\\mu}{\\sigma} \\) has mean zero and unit variance, and "
        "\\( P(|Z| \\leq 1.96) \\approx 0.95 \\).",
        ["1/sqrt(2 pi sigma^2) exp(-(x-mu)^2/(2 sigma^2))", "Z = (X - mu)/sigma"],
    ),
    (
        "## 1.2 Bayes' theorem\n\nFor a parameter \\( \\theta \\) and data \\( y \\) the posterior density follows from\n\n"
        "\\[\np(\\theta \\mid y)=\\frac{p(y \\mid \\theta) p(\\theta)}{p(y)}\n\\]\n\n"
        "where the evidence is the integral \\( p(y)=\\int p(y \\mid \\theta) p(\\theta) \\mathrm{d} \\theta \\). "
        "Because the evidence does not depend on \\( \\theta \\) we often write only the proportionality.",
        ["p(theta|y) = p(y|theta) p(theta) / p(y)", "p(y) = ∫ p(y|θ) p(θ) dθ"],
    ),
    (
        "## 2.1 Estimating a proportion\n\nWith \\( y \\) successes in \\( n \\) trials and a Beta prior, the posterior is\n\n"
        "\\[\n\\theta \\mid y \\sim \\operatorname {Beta}(\\alpha +y,\\beta +n-y)\n\\]\n\n"
        "and its mean \\( \\frac{\\alpha +y}{\\alpha +\\beta +n} \\) lies between the prior mean and the sample proportion.",
        ["Beta(alpha+y, beta+n-y)", "(alpha+y)/(alpha+beta+n)"],
    ),
    (
        "## A.1 The Gamma function\n\nThe Gamma function extends the factorial:\n\n"
        "\\[\n\\Gamma(\\alpha)=\\int_{0}^{\\infty} x^{\\alpha-1} e^{-x} \\mathrm{d} x, \\quad \\Gamma(n+1)=n!\n\\]\n\n"
        "Integrating by parts shows \\( \\Gamma(\\alpha+1)=\\alpha \\Gamma(\\alpha) \\) for every \\( \\alpha>0 \\).",
        ["Γ(α) = ∫_0^∞ x^(α-1) e^(-x) dx", "Gamma(alpha+1) = alpha Gamma(alpha)"],
    ),
    (
        "## 2.6 Counts and the Poisson model\n\nA count \\( Y \\) with rate \\( \\lambda \\) has probabilities\n\n"
        "\\[\nP(Y=k)=\\frac{\\lambda^{k} e^{-\\lambda}}{k !}, \\quad k=0,1,2, \\ldots\n\\]\n\n"
        "Its mean and variance agree: \\( \\mathbb{E}[Y]=\\operatorname{Var}(Y)=\\lambda \\).",
        ["P(Y=k) = lambda^k e^-lambda / k!", "E[Y] = Var(Y) = lambda"],
    ),
    (
        "## 1.4 Summaries of a sample\n\nThe sample mean and the sample variance are\n\n"
        "\\[\n\\bar{x}=\\frac{1}{n} \\sum_{i=1}^{n} x_{i}, \\quad s^{2}=\\frac{1}{n-1} \\sum_{i=1}^{n}\\left(x_{i}-\\bar{x}\\right)^{2}\n\\]\n\n"
        "Dividing by \\( n-1 \\) rather than \\( n \\) makes \\( s^{2} \\) unbiased for the variance.",
        ["s^2 = 1/(n-1) sum (x_i - x̄)^2"],
    ),
    (
        "## 4.3 The central limit theorem\n\nFor independent draws with mean \\( \\mu \\) and variance \\( \\sigma^{2} \\),\n\n"
        "\\[\n\\sqrt{n}\\left(\\bar{X}_{n}-\\mu\\right) \\xrightarrow{d} \\mathcal{N}\\left(0, \\sigma^{2}\\right)\n\\]\n\n"
        "which is why posterior distributions look normal for large samples.",
        ["sqrt(n)(X_n - mu) -> N(0, sigma^2)"],
    ),
    (
        "## A.3 Power series\n\nThe exponential and the sine have the expansions\n\n"
        "\\[\ne^{x}=\\sum_{k=0}^{\\infty} \\frac{x^{k}}{k !}, \\quad \\sin x=x-\\frac{x^{3}}{3 !}+\\frac{x^{5}}{5 !}-\\cdots\n\\]\n\n"
        "both converging for every real \\( x \\).",
        ["e^x = sum_{k=0}^inf x^k/k!", "sin x = x - x^3/3! + x^5/5!"],
    ),
    (
        "## 5.2 Least squares\n\nIn the linear model \\( y=X \\beta+\\varepsilon \\) the estimate that minimises the squared error is\n\n"
        "\\[\n\\hat{\\beta}=\\left(X^{\\top} X\\right)^{-1} X^{\\top} y\n\\]\n\n"
        "and under a flat prior it is also the posterior mean of \\( \\beta \\).",
        ["(X^T X)^-1 X^T y", "y = X beta + epsilon"],
    ),
    (
        "## 6.1 Divergence between distributions\n\nThe Kullback-Leibler divergence of \\( Q \\) from \\( P \\) is\n\n"
        "\\[\nD_{\\mathrm{KL}}(P \\| Q)=\\sum_{x} P(x) \\log \\frac{P(x)}{Q(x)}\n\\]\n\n"
        "It is never negative and is zero only when the two distributions agree.",
        ["D_KL(P||Q) = sum_x P(x) log(P(x)/Q(x))"],
    ),
    (
        "## 4.5 Fisher information\n\nThe information about \\( \\theta \\) in one observation is\n\n"
        "\\[\nI(\\theta)=-\\mathbb{E}\\left[\\frac{\\partial^{2}}{\\partial \\theta^{2}} \\log p(y \\mid \\theta)\\right]\n\\]\n\n"
        "and Jeffreys' prior is proportional to \\( \\sqrt{I(\\theta)} \\).",
        ["I(θ) = -E[∂²/∂θ² log p(y|θ)]", "sqrt(I(theta))"],
    ),
    (
        "## 2.5 Normal mean with known variance\n\nWith prior \\( \\mu \\sim \\mathcal{N}\\left(\\mu_{0}, \\tau_{0}^{2}\\right) \\) the posterior precision adds, "
        "\\( \\frac{1}{\\tau_{n}^{2}}=\\frac{1}{\\tau_{0}^{2}}+\\frac{n}{\\sigma^{2}} \\), and the posterior mean is the precision-weighted average\n\n"
        "\\[\n\\mu_{n}=\\frac{\\frac{\\mu_{0}}{\\tau_{0}^{2}}+\\frac{n \\bar{y}}{\\sigma^{2}}}{\\frac{1}{\\tau_{0}^{2}}+\\frac{n}{\\sigma^{2}}}\n\\]",
        ["1/tau_n^2 = 1/tau_0^2 + n/sigma^2", "mu_n = (mu_0/tau_0^2 + n ȳ/sigma^2)/(1/tau_0^2 + n/sigma^2)"],
    ),
    (
        "## A.2 Integration by parts\n\nFor differentiable \\( u \\) and \\( v \\),\n\n"
        "\\[\n\\int u \\mathrm{d} v=u v-\\int v \\mathrm{d} u\n\\]\n\n"
        "and for the logarithm \\( \\frac{\\mathrm{d}}{\\mathrm{d} x} \\ln x=\\frac{1}{x} \\).",
        ["∫ u dv = u v - ∫ v du", "d/dx ln x = 1/x"],
    ),
    (
        "## 7.2 Goodness of fit\n\nWith observed counts \\( O_{i} \\) and expected counts \\( E_{i} \\) Pearson's statistic is\n\n"
        "\\[\n\\chi^{2}=\\sum_{i=1}^{k} \\frac{\\left(O_{i}-E_{i}\\right)^{2}}{E_{i}}\n\\]\n\n"
        "compared with a chi-square distribution on \\( k-1 \\) degrees of freedom.",
        ["chi^2 = sum (O_i - E_i)^2 / E_i"],
    ),
    (
        "## A.4 Sums and complex exponentials\n\nA finite geometric series sums to\n\n"
        "\\[\n\\sum_{k=0}^{n} r^{k}=\\frac{1-r^{n+1}}{1-r}, \\quad r \\neq 1\n\\]\n\n"
        "and Euler's formula \\( e^{i \\theta}=\\cos \\theta+i \\sin \\theta \\) links the exponential to the circle.",
        ["sum_{k=0}^n r^k = (1 - r^(n+1))/(1 - r)", "e^(i theta) = cos theta + i sin theta"],
    ),
    (
        "## 3.4 Predicting new data\n\nThe posterior predictive distribution averages the model over the posterior:\n\n"
        "\\[\np(\\tilde{y} \\mid y)=\\int p(\\tilde{y} \\mid \\theta) p(\\theta \\mid y) \\mathrm{d} \\theta\n\\]\n\n"
        "For the binomial model the number of successes in \\( m \\) new trials has probability "
        "\\( \\binom{m}{k} p^{k}(1-p)^{m-k} \\) given \\( p \\).",
        ["p(ỹ|y) = ∫ p(ỹ|θ) p(θ|y) dθ", "binom(m,k) p^k (1-p)^(m-k)"],
    ),
]

NOHIT_QUERIES = [
    "quixotic zeppelin marmalade",
    "flibbertigibbet",
    "photosynthesis chlorophyll",
    '"the cat sat on the mat"',
    "cryptocurrency blockchain ledger",
    "sonnet iambic pentameter",
    "kangaroo boomerang outback",
    "xylophone",
    "volcanic basalt magma",
    "spaghetti carbonara recipe",
]


# --- sampling probes from the imported books ---------------------------------------------------------
_PROSE_WORD = re.compile(r"^[A-Za-z][a-z]+[,;.]?$")


def _prose_windows(text: str, size: int) -> list[list[str]]:
    """Runs of ``size`` plain prose words within one paragraph (no numbers, no maths, no running heads)."""
    windows = []
    for paragraph in text.split("\n\n"):
        words = paragraph.split()
        if len(words) < 25:  # headings, running heads, contents lines
            continue
        for start in range(0, len(words) - size):
            run = words[start : start + size]
            if all(_PROSE_WORD.match(w) for w in run) and sum(len(w) >= 6 for w in run) >= 2:
                windows.append([w.rstrip(",;.") for w in run])
    return windows


def _typo(word: str, rng: random.Random) -> str:
    """One keyboard slip: a letter dropped, doubled, swapped with the next, or replaced."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(["drop", "double", "swap", "replace"])
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + rng.choice("etaoinshrdlu".replace(word[i], "")) + word[i + 1 :]


def sample_probes(pages: list[tuple[str, int, str]], per_kind: int = 20, seed: int = 7) -> list[Probe]:
    """Phrase, typo, content-word and single-word probes whose expected page is the only one (among the probe books) that matches.

    phrase: 5-7 consecutive prose words, quoted. typo: another such run, unquoted, with 1-2 keyboard
    slips in words of 5+ letters. content: 2-3 words of 5+ letters from one page, each on at most
    CONTENT_MAX_PAGES probe-book pages, together on no other. word: a word found on one page only.
    """
    rng = random.Random(seed)
    norm = {(book, page): f" {normalize(text)} " for book, page, text in pages}
    page_terms = {key: set(text.split()) for key, text in norm.items()}
    doc_freq = Counter(t for found in page_terms.values() for t in found)
    candidates = [(book, page, text) for book, page, text in pages if len(text) > 800]
    probes: list[Probe] = []

    def unique_phrase(words: list[str]) -> bool:
        phrase = f" {' '.join(terms(' '.join(words)))} "
        return sum(phrase in text for text in norm.values()) == 1

    for kind in ("phrase", "typo"):
        made = 0
        while made < per_kind:
            book, page, text = rng.choice(candidates)
            windows = _prose_windows(text, rng.randint(5, 7))
            if not windows:
                continue
            words = rng.choice(windows)
            if not unique_phrase(words):
                continue
            if kind == "phrase":
                probes.append(Probe("phrase", f'"{" ".join(words)}"', book, page))
            else:
                slots = [i for i, w in enumerate(words) if len(w) >= 5 and w.lower() not in STOPWORDS]
                if not slots:
                    continue
                for i in rng.sample(slots, min(len(slots), rng.choice([1, 2]))):
                    words[i] = _typo(words[i], rng)
                probes.append(Probe("typo", " ".join(words), book, page))
            made += 1

    made = 0
    while made < per_kind:
        book, page, text = rng.choice(candidates)
        words = [
            t
            for t in page_terms[(book, page)]
            if t.isalpha() and len(t) >= 5 and t not in STOPWORDS and doc_freq[t] <= CONTENT_MAX_PAGES
        ]
        if len(words) < 3:
            continue
        chosen = rng.sample(sorted(words), rng.choice([2, 3]))
        if sum(all(w in found for w in chosen) for found in page_terms.values()) != 1:
            continue
        probes.append(Probe("content", " ".join(chosen), book, page))
        made += 1

    made = 0
    while made < per_kind:
        book, page, text = rng.choice(candidates)
        words = [t for t in page_terms[(book, page)] if t.isalpha() and len(t) >= 6 and doc_freq[t] == 1]
        if not words:
            continue
        probes.append(Probe("word", rng.choice(sorted(words)), book, page))
        made += 1
    return probes


def math_probes() -> list[Probe]:
    return [
        Probe("math", query, MATH_BOOK, page) for page, (_, queries) in enumerate(MATH_PAGES, 1) for query in queries
    ]


def nohit_probes() -> list[Probe]:
    return [Probe("nohit", query, None, None) for query in NOHIT_QUERIES]
