"""Agreement between models that rate the same photos: Kendall's tau-b and top-k overlap.

Photo-ranking benchmarks ask "would these two models pick the same photos?": the rank
correlation of their ratings over the samples both rated (Kendall's tau-b, which
accounts for the ties 1-10 ratings are full of) and the overlap of their top k.

Benchmarks are grouped by (test function, task, dataset hash, load label): only the
same photos, prepared the same way, asked the same way by the same benchmark, compare
(the test function is the test id without its parameters, so the models a benchmark is
parametrised over pair, while another test that happens to use the same task does not).
Within a group every pair of benchmarks of different (model, precision) is compared,
for every value score (a rating). A sample asked several times counts with its mean
rating; k in (1, 3, 5, 10) with k < n.

Top-k overlap is the *expected* overlap when ties at the cut are broken at random: on
each side, a sample rated strictly above the k-th best rating is in the top k; the t
samples tied at the k-th best rating compete for the r slots left, each in with
probability r/t; the rest are out. The two sides break their ties independently, so
the expected size of the intersection is the sum over samples of P(in a's top k) x
P(in b's top k), and the overlap is that divided by k. README wording: "top-k overlap:
the expected share of the k best-rated photos the two models have in common, ties at
the cut broken at random; two models that rate every photo the same (constant raters)
get k/n, what picking photos at random gets, not 1." (Breaking ties by sample id on
both sides, as before, gave two constant raters an overlap of 1.)
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TOP_K", "Agreement", "Side", "agreement", "kendall_tau_b", "top_k_chances",
           "top_k_overlap"]

from pytest_vlmbench.results.models import Agreement
from pytest_vlmbench.results.models import AgreementSide as Side

TOP_K = (1, 3, 5, 10)


def kendall_tau_b(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b: (C - D) / sqrt((n0 - n1) (n0 - n2)), O(n^2).

    C, D: concordant and discordant pairs; n0 = n(n-1)/2; n1, n2: pairs tied in xs, in
    ys. None below 2 values or when a side is constant (the denominator is 0: a model
    that gives every photo a 7 has no ranking to agree with).
    """
    if len(xs) != len(ys):
        raise ValueError(f"kendall_tau_b: {len(xs)} and {len(ys)} values")
    n = len(xs)
    if n < 2:
        return None
    concordant = discordant = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(n), 2):
        dx, dy = xs[i] - xs[j], ys[i] - ys[j]
        if dx == 0:
            tied_x += 1
        if dy == 0:
            tied_y += 1
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    n0 = n * (n - 1) // 2
    denominator = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    if denominator == 0:
        return None
    return max(-1.0, min(1.0, (concordant - discordant) / denominator))


def top_k_chances(scores: Mapping[str, float], k: int) -> dict[str, float]:
    """P(each sample is in the top k) with ties at the cut broken uniformly at random:
    1 above the k-th best score, r/t for the t samples tied at it competing for the r
    slots left, 0 below (every sample 1 when k >= the number of samples)."""
    if k >= len(scores):
        return dict.fromkeys(scores, 1.0)
    ranked = sorted(scores.values(), reverse=True)
    cut = ranked[k - 1]
    above = sum(v > cut for v in ranked)
    tied = sum(v == cut for v in ranked)
    share = (k - above) / tied
    return {sample: 1.0 if v > cut else share if v == cut else 0.0
            for sample, v in scores.items()}


def top_k_overlap(a: Mapping[str, float], b: Mapping[str, float], k: int) -> float:
    """E|top k of a ∩ top k of b| / k over the samples both scored, ties at each side's
    cut broken at random and independently: sum of P(in a's) x P(in b's), over k.

    Two constant raters over n samples: each sample in with probability k/n on both
    sides, n (k/n)^2 / k = k/n, what random picking gets.
    """
    if k < 1:
        raise ValueError(f"top_k_overlap: k={k} must be at least 1")
    common = set(a) & set(b)
    mine = top_k_chances({s: a[s] for s in common}, k)
    theirs = top_k_chances({s: b[s] for s in common}, k)
    # Clamped: the shares r/t may sum a rounding error past k.
    return max(0.0, min(1.0, sum(mine[s] * theirs[s] for s in sorted(common)) / k))


def _by_sample(records: Sequence[Mapping[str, Any]], score: str) -> dict[str, float]:
    sums: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record.get("phase") != "measure" or record.get("error") is not None:
            continue
        value = (record.get("scores") or {}).get(score)
        if isinstance(value, int | float) and not isinstance(value, bool):
            sums[str(record.get("sample_id"))].append(float(value))
    return {sample: sum(values) / len(values) for sample, values in sums.items()}


def _value_scores(entry: Mapping[str, Any]) -> set[str]:
    quality = (entry.get("summary") or {}).get("quality") or {}
    return set(quality.get("histograms") or {})


def _group(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    load = entry.get("load") or {}
    test = str(entry.get("test") or "").split("[", 1)[0]
    return (str(entry.get("task")), str((entry.get("dataset") or {}).get("hash")),
            str(load.get("label") or ""), test)


def _side(entry: Mapping[str, Any]) -> Side:
    return Side(benchmark=str(entry.get("id")), model=str(entry.get("model")),
                precision=str(entry.get("precision")))


def agreement(benchmarks: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
              *, scores: Sequence[str] | None = None) -> list[Agreement]:
    """Agreement for every pair of benchmarks of different (model, precision) in a group.

    ``benchmarks``: (entry, its records). The value scores compared are ``scores``, else
    those with a histogram in the entries' ``summary.quality`` (the value scores).
    """
    groups: dict[tuple[str, str, str, str], list[int]] = defaultdict(list)
    for index, (entry, _) in enumerate(benchmarks):
        groups[_group(entry)].append(index)
    found: list[Agreement] = []
    for (task, dataset, _label, _test), members in groups.items():
        for i, j in itertools.combinations(members, 2):
            (entry_a, records_a), (entry_b, records_b) = benchmarks[i], benchmarks[j]
            side_a, side_b = _side(entry_a), _side(entry_b)
            if (side_a["model"], side_a["precision"]) == (side_b["model"], side_b["precision"]):
                continue
            names = scores if scores is not None else sorted(
                _value_scores(entry_a) & _value_scores(entry_b))
            for name in names:
                a, b = _by_sample(records_a, name), _by_sample(records_b, name)
                common = sorted(set(a) & set(b))
                n = len(common)
                # Only the samples both rated: a sample one side never rated (its request
                # failed) must not take a top-k slot.
                a = {s: a[s] for s in common}
                b = {s: b[s] for s in common}
                tau = kendall_tau_b([a[s] for s in common], [b[s] for s in common])
                found.append(Agreement(
                    task=task, dataset=dataset, score=name, a=side_a, b=side_b, n=n,
                    kendall_tau_b=tau, kendall_absent_reason=None if tau is not None
                    else _why_no_tau(a, b, n),
                    top_k={str(k): top_k_overlap(a, b, k) for k in TOP_K if k < n},
                ))
    return found


def _why_no_tau(a: Mapping[str, float], b: Mapping[str, float], n: int) -> str:
    """Why Kendall's tau-b is absent for two benchmarks' ratings."""
    if n < 2:
        return f"{n} sample(s) rated by both; tau needs at least 2"
    constant = [f"{side} rated every sample {next(iter(ratings.values())):g}"
                for side, ratings in (("a", a), ("b", b)) if len(set(ratings.values())) == 1]
    if constant:
        return f"{' and '.join(constant)}: no ranking to correlate"
    return "undefined for these ratings"
