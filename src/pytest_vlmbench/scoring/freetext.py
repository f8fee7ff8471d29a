"""Reading what a model wrote: free text, and the words inside JSON answers.

The rules, stated once so that a score can be checked by hand (unit-tested in
tests/test_scoring_freetext.py):

- Text is lower-cased; words are runs of letters or digits. Sentences end at . ; ! ? and
  line breaks; clauses also end at commas.
- Numbers: digits, or the words zero and one..twelve; "no" and "zero" are 0; "a", "an"
  are 1 (an *article*, weaker than a number: see counts below).
- Shape words: circle <- circle, disc, disk, dot; square <- square, rectangle (the
  scenes' only four-sided shape); triangle <- triangle; each also in the plural. Generic
  words (shape, object, item, figure) name shapes of no kind: "five shapes" is a total.
- Colour words: the scene palette (`synthetic.COLOURS`), "violet" read as purple, and
  colours the scenes never use, kept so that naming them counts against an answer: grey
  (also "gray"), pink, brown.
- A *shape phrase* is [number] [up to 3 modifiers: colour or size words] shape-word, e.g.
  "two small red circles"; its colour is the modifier colour nearest the shape word. A
  shape word followed by ":" or "=" and a number ("circles: 2") takes that number.
- Negation: a shape phrase without a number of its own is negated, so counts 0 (a
  number 0, as "no triangles" is), when a negation word comes before it in its clause:
  no, not, never, nor, neither, without, cannot, and -n't ("don't", "isn't"; "dont"
  too). A list continues the negation ("I don't see any triangles or squares": both
  0); it stops at the clause's end, at "but" / "though" / "although" / "however" /
  "while" / "whereas", at a positive number, and at an article after "and" / "plus" (a
  new item: "no triangle and a circle" reads the circle as 1). "not a circle" is 0.
- Counts of a kind: the sum of its phrases with a number and of its phrases with an
  article ("2 red circles and 1 blue circle" = 3, "three red circles and a blue circle"
  = 4, "a red circle and a blue circle" = 2; negated phrases add 0); a kind with only
  bare phrases: 1 when all are singular ("the circle"), else (a bare plural: "circles")
  unreadable. A kind never named counts 0, but only when the output counts some kind
  explicitly (a kind phrase with a number, an article or a negation, or a generic
  phrase with the number 0: "no shapes"); otherwise every kind is unreadable, so "I see
  some shapes.", "five shapes" (a total only) and "There are circles." earn nothing on
  counts. An output naming no shape at all is unreadable.
- Positions: "top left", "top-left", "upper left", "left top" -> top-left; top / upper,
  middle / centre / center / central, bottom / lower for rows; left, centre / center /
  middle, right for columns; "the centre" / "the middle" -> centre; a lone "the top",
  "the left"... -> that edge's middle cell, unless followed by "of" (a relation: "to the
  left of the square"), except "of the image / picture / frame / scene / canvas / photo".
  A shape phrase takes the first position after it in its clause, else the last before
  it in its clause, else the first after it in its sentence before the next shape word.
- Background: a colour within 3 modifiers before "background", or after "background is
  / of / colour / color / :". Gradient: "gradient", "gradual", "fade(s)", "fading" say
  yes; "no / not / without gradient" or "solid / plain / uniform / flat" say no; both or
  neither: unreadable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_vlmbench.datasets.synthetic import COLOURS, POSITIONS, SHAPES

NUMBER_WORDS = {
    "zero": 0, "no": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
ARTICLES = frozenset({"a", "an"})
SHAPE_WORDS = {
    "circle": "circle", "disc": "circle", "disk": "circle", "dot": "circle",
    "square": "square", "rectangle": "square", "triangle": "triangle",
}
GENERIC_WORDS = frozenset({"shape", "object", "item", "figure"})
OFF_PALETTE = {"grey": "grey", "gray": "grey", "pink": "pink", "brown": "brown"}
COLOUR_WORDS: dict[str, str] = {name: name for name in COLOURS} | {"violet": "purple"}
COLOUR_WORDS |= OFF_PALETTE
SIZE_WORDS = frozenset({
    "small", "large", "big", "tiny", "little", "medium", "sized", "single", "solid",
    "filled", "coloured", "colored", "bright", "dark", "light", "pale", "other",
})
_ROWS = {"top": "top", "upper": "top", "middle": "middle", "centre": "middle",
         "center": "middle", "central": "middle", "bottom": "bottom", "lower": "bottom"}
_COLUMNS = {"left": "left", "right": "right", "centre": "centre", "center": "centre",
            "middle": "centre"}
_PAIR = re.compile(
    r"\b(top|upper|middle|centre|center|central|bottom|lower)[\s-]+(left|right|centre|"
    r"center|middle)\b|\b(left|right)[\s-]+(top|upper|bottom|lower)\b"
)
_EDGE = re.compile(
    r"\bthe\s+(?:very\s+)?(top|upper|bottom|lower|left|right|centre|center|middle)\b"
    r"(?!\s+of\b(?!\s+the\s+(?:image|picture|frame|scene|canvas|photo)))"
)
_TOKEN = re.compile(r"@[a-z-]+|[a-z]+|\d+(?:\.\d+)?|[.;!?\n]|[,:=]")
_SENTENCE_END = frozenset({".", ";", "!", "?", "\n"})
_GRADIENT_YES = frozenset({"gradient", "gradients", "gradual", "fade", "fades", "fading"})
_GRADIENT_NO = frozenset({"solid", "plain", "uniform", "flat"})
_NEGATIONS = frozenset({"no", "not", "never", "nor", "neither", "without", "cannot", "dont",
                        "doesnt", "didnt", "isnt", "arent", "cant"})
_SCOPE_STOPS = frozenset({",", "but", "though", "although", "however", "while", "whereas"})
_TOTAL = re.compile(r"\btotal\s*(?:of|:|=|is)?\s*(\d+|[a-z]+)\b|\b(\d+|[a-z]+)\s+(?:[a-z]+\s+)?"
                    r"in\s+total\b")


def _cell(row: str, column: str) -> str:
    if row == "middle":
        return "centre" if column == "centre" else f"middle-{column}"
    return f"{row}-{column}"


def _positions_marked(text: str) -> str:
    """Replace each position phrase by a token ``@top-left`` (a POSITIONS entry)."""

    def pair(match: re.Match[str]) -> str:
        if match.group(1):
            return f" @{_cell(_ROWS[match.group(1)], _COLUMNS[match.group(2)])} "
        return f" @{_cell(_ROWS[match.group(4)], match.group(3))} "

    def edge(match: re.Match[str]) -> str:
        word = match.group(1)
        if word in ("left", "right"):
            return f" @middle-{word} "
        row = _ROWS[word]
        return f" @{_cell(row, 'centre')} "

    return _EDGE.sub(edge, _PAIR.sub(pair, text))


def tokens(text: str) -> list[str]:
    """Lower-cased word, number, position (``@top-left``) and punctuation tokens."""
    return _TOKEN.findall(_positions_marked(text.lower().replace("\u2019", "'")))


def number(word: str) -> int | None:
    """A whole number written as digits or as a word (zero, no, one..twelve)."""
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.get(word)


def singular(word: str) -> tuple[str, bool]:
    """(word without a plural s, whether it had one)."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1], True
    return word, False


def shape_of(word: str) -> str | None:
    """The shape kind a word names (circle, square, triangle), singular or plural."""
    return SHAPE_WORDS.get(singular(word)[0])


def colour_of(word: str) -> str | None:
    """A colour word read as the palette name (or grey/pink/brown, off the palette)."""
    return COLOUR_WORDS.get(word)


def normalise_colour(value: object) -> str | None:
    """A JSON colour field: "Red", " violet " -> purple; None when it names no colour."""
    if not isinstance(value, str):
        return None
    found = [c for c in (colour_of(t) for t in tokens(value)) if c is not None]
    return found[-1] if found else None


def normalise_shape(value: object) -> str | None:
    """A JSON shape field: "Circles", "disc" -> circle; None when it names no shape."""
    if not isinstance(value, str):
        return None
    found = [s for s in (shape_of(t) for t in tokens(value)) if s is not None]
    return found[-1] if found else None


def normalise_position(value: object) -> str | None:
    """A JSON position field: "top left", "Upper-Left", "center" -> a POSITIONS entry."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in ("centre", "center", "middle", "central"):
        return "centre"
    if text in ("top", "bottom", "left", "right"):
        text = "the " + text
    marked = [t[1:] for t in tokens(text) if t.startswith("@")]
    return marked[0] if len(marked) == 1 and marked[0] in POSITIONS else None


def as_count(value: object) -> int | None:
    """A JSON count: a whole number >= 0 (2, 2.0, "2", "two"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str):
        return number(value.strip().lower())
    return None


@dataclass
class Phrase:
    """One shape phrase: "two small red circles" -> kind circle, quantity 2."""

    kind: str | None  # None: a generic word (shape, object...)
    quantity: int | None  # None: a bare plural, how many is not said
    how: str  # "number", "article" or "bare"
    colour: str | None
    position: str | None
    at: int  # index of the shape word in the tokens


@dataclass
class Reading:
    """Everything the free-text rules read from one output."""

    phrases: list[Phrase] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)  # every colour word, in order
    background: str | None = None
    gradient: bool | None = None
    total: int | None = None

    def counts(self) -> dict[str, int | None] | None:
        """Count per kind by the rules above; None (every kind unreadable) when no kind
        is counted explicitly, a shape named or not."""
        explicit = any(p.how in ("number", "article") and (p.kind is not None or p.quantity == 0)
                       for p in self.phrases)
        if not explicit:
            return None
        result: dict[str, int | None] = {}
        for kind in SHAPES:
            mine = [p for p in self.phrases if p.kind == kind]
            counted = [p.quantity or 0 for p in mine if p.how in ("number", "article")]
            if counted:
                result[kind] = sum(counted)
            elif mine:
                result[kind] = 1 if all(p.quantity == 1 for p in mine) else None
            else:
                result[kind] = 0
        return result

    def objects(self) -> list[dict[str, Any]]:
        """One object per shape: phrases with a number or article, else the bare ones
        ("the red circle" refers back; it is a new object only when nothing else is);
        a bare plural ("red circles") is read as 2, the fewest it can mean."""
        shaped = [p for p in self.phrases if p.kind is not None]
        counted = [p for p in shaped if p.how != "bare"] or shaped
        found: list[dict[str, Any]] = []
        for p in counted:
            for _ in range(min(p.quantity if p.quantity is not None else 2, 12)):
                found.append({"shape": p.kind, "colour": p.colour, "position": p.position})
        return found


def _quantity(word: str) -> tuple[int | None, str]:
    if word in ARTICLES:
        return 1, "article"
    value = number(word)
    return (value, "number") if value is not None else (None, "bare")


def read_text(text: str) -> Reading:
    """Read an output by the module's rules; never raises on a string."""
    words = tokens(text)
    reading = Reading()
    for index, word in enumerate(words):
        colour = colour_of(word)
        if colour is not None:
            reading.colours.append(colour)
        base, plural = singular(word)
        kind = SHAPE_WORDS.get(base)
        if kind is None and base not in GENERIC_WORDS:
            continue
        start, colour_here = index, None
        while start > 0 and index - start < 3 and (
            colour_of(words[start - 1]) or words[start - 1] in SIZE_WORDS
        ):
            start -= 1
            colour_here = colour_here or colour_of(words[start])
        quantity, how = _quantity(words[start - 1]) if start > 0 else (None, "bare")
        if how == "bare" and index + 2 < len(words) and words[index + 1] in (":", "="):
            value = number(words[index + 2])
            if value is not None:
                quantity, how = value, "number"
        if how == "bare":
            quantity = None if plural else 1
        if how != "number" and _negated(words, start - 1 if how == "article" else start,
                                        after_and=how == "article"):
            quantity, how = 0, "number"
        reading.phrases.append(Phrase(kind, quantity, how, colour_here, None, index))
    _place(words, reading.phrases)
    reading.background = _background(words)
    reading.gradient = _gradient(words)
    reading.total = _total(text.lower(), reading.phrases)
    return reading


def _negated(words: list[str], at: int, *, after_and: bool) -> bool:
    """Whether a negation word governs the phrase whose first word is ``words[at]``:
    scanning back through its clause, a negation word before any stop (see the rules)."""
    if after_and and at > 0 and words[at - 1] in ("and", "plus"):
        return False
    for back in range(at - 1, -1, -1):
        word = words[back]
        if word in _SENTENCE_END or word in _SCOPE_STOPS:
            return False
        if word in _NEGATIONS or (word == "t" and back > 0 and words[back - 1].endswith("n")):
            return True
        value = number(word)
        if value is not None and value > 0:
            return False
        if word in ARTICLES and back > 0 and words[back - 1] in ("and", "plus"):
            return False
    return False


def _bounds(words: list[str], index: int, stops: Iterable[str]) -> tuple[int, int]:
    stop = set(stops)
    low = index
    while low > 0 and words[low - 1] not in stop:
        low -= 1
    high = index
    while high + 1 < len(words) and words[high + 1] not in stop:
        high += 1
    return low, high


def _place(words: list[str], phrases: list[Phrase]) -> None:
    nouns = sorted(p.at for p in phrases)
    for p in phrases:
        if p.kind is None:
            continue
        later = [n for n in nouns if n > p.at]
        earlier = [n for n in nouns if n < p.at]
        next_noun = later[0] if later else len(words)
        prev_noun = earlier[-1] if earlier else -1
        c_low, c_high = _bounds(words, p.at, _SENTENCE_END | {","})
        _, s_high = _bounds(words, p.at, _SENTENCE_END)
        after_clause = [i for i in range(p.at + 1, min(c_high, next_noun - 1) + 1)
                        if words[i].startswith("@")]
        before_clause = [i for i in range(max(c_low, prev_noun + 1), p.at)
                         if words[i].startswith("@")]
        after_sentence = [i for i in range(p.at + 1, min(s_high, next_noun - 1) + 1)
                          if words[i].startswith("@")]
        for choice in (after_clause[:1], before_clause[-1:], after_sentence[:1]):
            if choice:
                p.position = words[choice[0]][1:]
                break


def _background(words: list[str]) -> str | None:
    for index, word in enumerate(words):
        if word not in ("background", "backdrop"):
            continue
        for back in range(index - 1, max(-1, index - 4), -1):
            colour = colour_of(words[back])
            if colour is not None:
                return colour
            if words[back] not in SIZE_WORDS and words[back] not in _GRADIENT_YES | _GRADIENT_NO:
                break
        ahead = words[index + 1: index + 6]
        if ahead and ahead[0] in ("is", "of", "colour", "color", ":"):
            for word_ahead in ahead[1:]:
                colour = colour_of(word_ahead)
                if colour is not None:
                    return colour
    return None


def _gradient(words: list[str]) -> bool | None:
    yes = no = False
    for index, word in enumerate(words):
        if word in _GRADIENT_YES:
            if any(w in ("no", "not", "without") for w in words[max(0, index - 2): index]):
                no = True
            else:
                yes = True
        elif word in _GRADIENT_NO:
            no = True
    return yes if yes != no else None


def _total(text: str, phrases: list[Phrase]) -> int | None:
    for p in phrases:
        if p.kind is None and p.how == "number":
            return p.quantity
    for match in _TOTAL.finditer(text):
        value = number(match.group(1) or match.group(2))
        if value is not None:
            return value
    return None
