"""Chance levels, computed exactly per sample (no simulation).

The chance model of every ground-truth score: an answer drawn uniformly from the task's
answer space for this sample. Concretely:

- a count: uniform over 0..M per shape kind, and for the total, M the most shapes a
  scene of the sample's difficulty can hold (`synthetic.RULES`: easy 5, so 1/6 of being
  right; medium 7; hard 9; truth without a difficulty: easy). This is not the range a
  task's JSON schema allows (0..9 per kind, 0..30 in all): a model that guesses over
  that wider range does worse than this chance level, which is the stricter yardstick;
- colours and shapes of the objects: as many objects as the scene holds, each colour
  uniform over the palette minus the background, each shape uniform over the 3 kinds;
- positions: the scene's shapes placed uniformly at random in distinct cells of the 3x3
  grid (each shape's cell right with probability 1/9; pair relations by enumerating
  the 72 ordered pairs of distinct cells);
- background: uniform over the palette; gradient: yes or no, 1/2;
- a caption's colours: words drawn uniformly from the palette (precision = share of the
  palette the scene holds); a caption's shape kinds: a uniformly random non-empty
  subset of the 3 kinds, one of the 7 (recall 4/7: a kind is in 4 of them; precision
  p/3 with p kinds present, see `shape_precision`);
- spatial relations: an answer with as many objects as the scene has shapes.

So a model that scores near these levels has learnt nothing the scorer can see: the
tiny random VLM of the default catalog should, which checks that the scorer is not fooled.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from math import comb

from pytest_vlmbench.datasets.synthetic import MAX_SHAPES, POSITIONS, RULES


def count_answers(difficulty: object = None) -> range:
    """The count answer space of a sample: 0..the most shapes its level draws."""
    rule = next((r for level, r in RULES.items() if level == difficulty), None)
    return range((rule.shapes[1] if rule is not None else MAX_SHAPES) + 1)


def count_exact(true: int, answers: range) -> float:
    """P(U == true), U uniform on ``answers``."""
    return 1 / len(answers) if true in answers else 0.0


def count_abs_error(true: int, answers: range) -> float:
    """E|U - true|, U uniform on ``answers``."""
    return sum(abs(u - true) for u in answers) / len(answers)


def worst_abs_error(true: int, answers: range) -> float:
    """The largest |u - true| over the answer space: the error of an unreadable count,
    so that failing to answer never beats guessing."""
    return float(max(abs(u - true) for u in answers))


def _expected_min_binomial(n: int, p: float, cap: int) -> float:
    return sum(comb(n, x) * p**x * (1 - p) ** (n - x) * min(x, cap) for x in range(n + 1))


def multiset_overlap(true: Sequence[str], options: Sequence[str]) -> float:
    """E[overlap(X, true)] / len(true), X: len(true) draws uniform over ``options``.

    The expected multiset overlap is a sum over options c of E[min(X_c, t_c)], X_c
    binomial(n, 1/k): the answer's and the truth's lengths are equal, so this is the
    expected accuracy (overlap / max of the two lengths).
    """
    n, k = len(true), len(options)
    if n == 0 or k == 0:
        return 0.0
    wanted = Counter(true)
    total = sum(_expected_min_binomial(n, 1 / k, wanted[c]) for c in set(options) if wanted[c])
    return total / n


def cell(position: str) -> tuple[int, int]:
    """(row, column) of a POSITIONS entry."""
    return divmod(POSITIONS.index(position), 3)


def relation(a: str, b: str) -> tuple[int, int]:
    """Where b is from a: (-1 left / 0 same column / 1 right, -1 above / 0 / 1 below)."""
    (row_a, col_a), (row_b, col_b) = cell(a), cell(b)
    return ((col_b > col_a) - (col_b < col_a), (row_b > row_a) - (row_b < row_a))


def _relation_shares() -> dict[tuple[int, int], float]:
    pairs = list(itertools.permutations(POSITIONS, 2))
    counted = Counter(relation(a, b) for a, b in pairs)
    return {key: value / len(pairs) for key, value in counted.items()}


_RELATION_SHARE = _relation_shares()


def spatial_pairs(positions: Sequence[str]) -> float:
    """Mean over the true pairs of P(a random pair of distinct cells has their relation)."""
    pairs = list(itertools.combinations(positions, 2))
    if not pairs:
        return 0.0
    return sum(_RELATION_SHARE[relation(a, b)] for a, b in pairs) / len(pairs)


# A kind is in 4 of the 7 non-empty subsets of the 3 kinds.
SHAPE_RECALL = 4 / 7


def shape_precision(present: int, kinds: int = 3) -> float:
    """E[|S ∩ P| / |S|], S uniform over the non-empty subsets of ``kinds`` kinds, P the
    ``present`` kinds: ``present`` x E[1(c in S) / |S|] for one kind c, which is
    sum over sizes m of C(kinds - 1, m - 1) / m / (2^kinds - 1); for 3 kinds
    (1 + 2/2 + 1/3) / 7 = 1/3, so present/3."""
    each = sum(comb(kinds - 1, m - 1) / m for m in range(1, kinds + 1)) / ((1 << kinds) - 1)
    return present * each
