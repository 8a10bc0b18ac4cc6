"""Answer retention of prompt compression, in-domain and out-of-domain (issue 36; LLMLingua-2, Pan et al., 2024,
evaluates on held-out genres the same way: trained on MeetingBank, tested on LongBench, ZeroScrolls, GSM8K, BBH).

Documents come from three kinds of source: held-out documents of the sources the compressor was distilled
from (``in-domain``), whole sources no distillation chunk comes from (``out-of-domain``: BBC news, number
dense; Grimm's fairy tales), and one more whole source kept apart for choices such as the distillation signal
(``validation``: book excerpts), so the reported out-of-domain numbers are never tuned on. Facts of six kinds
(codes/counts/amounts, years, dates, multi-word names, towns, short phrases) are planted at sentence
boundaries; a fact is retained when its answer string survives compression. Seeds draw the documents, the
offsets and the facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

KINDS = ("number", "year", "date", "name", "place", "phrase")
NUMERIC_KINDS = ("number", "year", "date")
SPLITS = ("in-domain", "out-of-domain", "validation")

TAGS = ["orchid", "granite", "saffron", "cobalt", "juniper", "amber", "falcon", "maple", "heron", "basalt", "indigo",
        "willow", "onyx", "tamarind", "sorrel", "quartz"]
FIRST = ["Marisol", "Tobias", "Ingrid", "Kwame", "Yusuf", "Priya", "Dmitri", "Sofia", "Henrik", "Amara", "Oskar",
         "Leilani", "Aurelio", "Nadia", "Bartek", "Fumiko", "Idris", "Svetlana"]
LAST = ["Okonkwo", "Lindqvist", "Castellanos", "Varga", "Nakamura", "Abernathy", "Moreau", "Petrenko", "Quintero",
        "Haverkamp", "Osei", "Rautio", "Delacroix", "Szabo", "Mbeki", "Fairweather"]
TOWNS = ["Ballarat", "Tartu", "Kalmar", "Lleida", "Oamaru", "Kenora", "Tulcea", "Mostar", "Zadar", "Arequipa",
         "Kisumu", "Ilulissat", "Mopti", "Tromso", "Ushuaia", "Nakuru"]
ADJ = ["silver", "velvet", "copper", "crimson", "hollow", "frozen", "golden", "restless", "paper", "midnight"]
NOUN = ["lantern", "compass", "kettle", "harbor", "meadow", "anchor", "violin", "glacier", "orchard", "sparrow"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

# (sentence, question) per kind; {A} is the answer, the other slots are context
TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "number": [("The access code for the {T} vault is {A}.", "What is the access code for the {T} vault?"),
               ("The {T} depot shipped {A} crates last quarter.", "How many crates did the {T} depot ship last quarter?"),
               ("The {T} fund paid out {A} dollars in grants.", "How many dollars did the {T} fund pay out in grants?")],
    "year": [("The {T} bridge was completed in {A}.", "In which year was the {T} bridge completed?"),
             ("The {T} society was founded in {A}.", "In which year was the {T} society founded?")],
    "date": [("The {T} hearing was moved to {A}.", "To which date was the {T} hearing moved?"),
             ("The {T} festival opens on {A}.", "On which date does the {T} festival open?")],
    "name": [("The {T} project is led by {A}.", "Who leads the {T} project?"),
             ("The {T} prize went to {A}.", "Who won the {T} prize?")],
    "place": [("The {T} meeting was moved to {A}.", "Which town was the {T} meeting moved to?"),
              ("The {T} crew is based in {A}.", "In which town is the {T} crew based?")],
    "phrase": [("The password for the {T} account is {A}.", "What is the password for the {T} account?"),
               ("The {T} team named its boat {A}.", "What did the {T} team name its boat?")],
}


@dataclass
class Fact:
    kind: str
    sentence: str
    question: str
    answer: str


@dataclass
class DomainPrompt:
    text: str
    length: int
    facts: list[Fact]
    source: str
    split: str


def _answer(kind: str, rng: np.random.Generator) -> str:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    if kind == "number":  # a code, a count with a thousands separator, or an amount
        form = int(rng.integers(3))
        if form == 0:
            return str(int(rng.integers(10000, 99999)))
        if form == 1:
            return f"{int(rng.integers(1000, 99999)):,}"
        return f"{int(rng.integers(100, 999))},{int(rng.integers(0, 999)):03d}"
    if kind == "year":
        return str(int(rng.integers(1850, 2021)))
    if kind == "date":
        return f"{pick(MONTHS)} {int(rng.integers(1, 29))}"
    if kind == "name":
        return f"{pick(FIRST)} {pick(LAST)}"
    if kind == "place":
        return pick(TOWNS)
    return f"{pick(ADJ)} {pick(NOUN)}"


def retained(text: str, answer: str) -> bool:
    """The answer string, whole (word boundaries, case-insensitive), is still in the text."""
    return re.search(r"(?<!\w)" + re.escape(answer.lower()) + r"(?!\w)", text.lower()) is not None


def draw_facts(rng: np.random.Generator, body: str, kinds=KINDS) -> list[Fact]:
    """One fact per kind, each with a distinct tag, whose answer does not already occur in ``body``."""
    out: list[Fact] = []
    tags = [TAGS[i] for i in rng.permutation(len(TAGS))]
    for kind, tag in zip(kinds, tags):
        s, q = TEMPLATES[kind][int(rng.integers(len(TEMPLATES[kind])))]
        for _ in range(20):
            a = _answer(kind, rng)
            if not retained(body, a) and all(a != f.answer for f in out):
                break
        out.append(Fact(kind, s.format(T=tag, A=a), q.format(T=tag), a))
    return out


def domain_documents(source: str, split: str, holdout_docs: int) -> list[str]:
    """The documents a domain's prompts are cut from: the held-out tail of a distilled source (in-domain), or
    every document of a source that was never distilled."""
    from ..core.data import load_long_texts
    from ..slim.compress.distill import split_documents

    if split == "in-domain":
        return split_documents(source, holdout_docs)[1]
    return [d for d in load_long_texts(source) if d.strip()]


def cut_prompt(rng: np.random.Generator, docs: list[str], length: int, enc) -> str:
    """About ``length`` cl100k tokens of consecutive documents from a random start, cut at sentence ends."""
    start = int(rng.integers(len(docs)))
    parts, n = [], 0
    for j in range(len(docs)):  # only as many documents as the length needs (BBC has 2,225)
        d = docs[(start + j) % len(docs)]
        parts.append(d)
        n += len(d) // 3
        if n > 3 * length + 6000:
            break
    ids = enc.encode_ordinary("\n\n".join(parts))
    off = int(rng.integers(0, max(1, min(len(ids) - length, 2000))))
    body = enc.decode(ids[off: off + length])
    cut = max(body.rfind(". "), body.rfind("\n"))
    body = body[: cut + 1] if cut > len(body) // 2 else body
    first = max(body.find(". "), body.find("\n"))
    return body[first + 1:].lstrip() if 0 <= first < 200 else body


def plant(rng: np.random.Generator, body: str, facts: list[Fact]) -> str:
    """The fact sentences inserted at distinct random sentence boundaries, in order."""
    bounds = [m.end() for m in re.finditer(r"(?<=[.!?])\s+|\n", body)]
    if len(bounds) < len(facts):  # text without punctuation (20 Newsgroups here is lower-cased, unpunctuated)
        bounds = [m.end() for m in re.finditer(r"\s+", body)]
    pos = sorted(rng.choice(bounds, size=min(len(facts), len(bounds)), replace=False).tolist()) if bounds else []
    pieces, prev = [], 0
    for p, f in zip(pos, facts):
        pieces += [body[prev:p], f.sentence + " "]
        prev = p
    pieces.append(body[prev:])
    return "".join(pieces)


def domain_prompts(domains: dict[str, str], lengths: list[int], docs_per_length: list[int], seed: int,
                   holdout_docs: int, enc) -> list[DomainPrompt]:
    """Per domain (source -> split), ``docs_per_length[i]`` prompts of ``lengths[i]`` tokens with one fact per
    kind planted. The rng of a seed depends on the domain's name only, so adding a domain changes no other."""
    out = []
    for source, split in domains.items():
        docs = domain_documents(source, split, holdout_docs)
        rng = np.random.default_rng([seed, *source.encode()])
        for L, n in zip(lengths, docs_per_length):
            for _ in range(n):
                body = cut_prompt(rng, docs, L, enc)
                facts = draw_facts(rng, body)
                out.append(DomainPrompt(plant(rng, body, facts), L, facts, source, split))
    return out


def check_held_out(domains: dict[str, str], distilled_sources: set[str]) -> None:
    """A source benchmarked as out-of-domain or validation must not be one the compressor was distilled from."""
    from ..core.errors import SlimguardError

    bad = sorted(s for s, sp in domains.items() if sp != "in-domain" and s in distilled_sources)
    if bad:
        raise SlimguardError(f"out_of_domain/validation source(s) {', '.join(bad)} were distilled into the compressor; "
                             "remove them from the benchmark's held-out domains or retrain without them")
