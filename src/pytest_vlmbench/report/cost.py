"""The cost section: what the measured energy costs at a stated electricity price, and
what a hosted API would charge for the same token counts, per 1,000 requests.

Every cost is one summary figure times a stated price, so a reader can redo the sum:
energy per request (J) x 1000 / 3.6e6 = kWh per 1,000 requests, times the price per
kWh. A configuration without an energy reading has no energy cost (absent, with the
reason), never a cost of zero. The API column prices this model's token counts: a
hosted model tokenizes on its own (images especially), so it estimates the price of
the same token volume, not the hosted model's bill.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from pytest_vlmbench.report import figures
from pytest_vlmbench.report.model import Block, Bullets, Cell, Paragraph, Section, Table
from pytest_vlmbench.report.recommend import absent_reason
from pytest_vlmbench.report.sources import Config

J_PER_KWH = 3.6e6
REQUESTS = 1000
"""Costs are per this many requests."""
TOKENS = 1_000_000
"""API prices, and the energy cost per output token, are per this many tokens."""


@dataclass(frozen=True)
class ApiPrice:
    """A hosted API's list price per million input and output tokens."""

    name: str
    input_per_mtok: float
    output_per_mtok: float


DEFAULT_ELECTRICITY_PRICE = 0.30
"""Per kWh, when no --electricity-price is given (the report says it is the default)."""
DEFAULT_CURRENCY = "USD"


@dataclass
class Prices:
    """The prices the section assumes: electricity per kWh (None: no energy cost), the
    currency they are in, and API prices to compare with. `electricity_given`: the user
    gave the electricity price (False: the default was used, and the report says so)."""

    electricity_per_kwh: float | None
    currency: str
    api: list[ApiPrice] = field(default_factory=list)
    electricity_given: bool = True

    @property
    def electricity_source(self) -> Literal["given", "default"]:
        return "given" if self.electricity_given else "default"

    def __post_init__(self) -> None:
        price = self.electricity_per_kwh
        if price is not None and not (math.isfinite(price) and price >= 0):
            raise ValueError(f"electricity price {price!r}: needs a non-negative number per kWh")


API_PRICE_FORM = "NAME=IN/OUT (prices per million input and output tokens, e.g. gpt-x=2.50/10.00)"


def _price(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"API price {spec!r}: {text.strip()!r} is not a non-negative number; "
                         f"expected {API_PRICE_FORM}")
    return value


def parse_api_price(spec: str) -> ApiPrice:
    """`name=IN/OUT` (the CLI's --api-price) as an ApiPrice; a one-line ValueError for
    anything else."""
    name, eq, prices = spec.partition("=")
    name = name.strip()
    if not eq or not name:
        raise ValueError(f"API price {spec!r}: expected {API_PRICE_FORM}")
    parts = prices.split("/")
    if len(parts) != 2:
        raise ValueError(f"API price {spec!r}: expected {API_PRICE_FORM}")
    return ApiPrice(name, _price(parts[0], spec), _price(parts[1], spec))


def kwh_per_1k_requests(energy_per_request_j: float) -> float:
    """kWh of 1,000 requests: J/request x 1000 / 3.6e6."""
    return energy_per_request_j * REQUESTS / J_PER_KWH


def energy_cost_per_1k_requests(energy_per_request_j: float, price_per_kwh: float) -> float:
    return kwh_per_1k_requests(energy_per_request_j) * price_per_kwh


def energy_cost_per_mtok(energy_per_token_j: float, price_per_kwh: float) -> float:
    """Electricity cost of 1M output tokens: J/token x 1e6 / 3.6e6 x price."""
    return energy_per_token_j * TOKENS / J_PER_KWH * price_per_kwh


def api_cost_per_1k_requests(prompt_tokens_mean: float, completion_tokens_mean: float,
                             api: ApiPrice) -> float:
    """1000 x (prompt tokens x input price + completion tokens x output price) / 1e6."""
    return REQUESTS * (prompt_tokens_mean * api.input_per_mtok
                       + completion_tokens_mean * api.output_per_mtok) / TOKENS


def amount(value: float) -> str:
    """3 significant figures in plain notation (0.003, 7.5, 1230): costs span from
    fractions of a cent to thousands."""
    return f"{Decimal(f'{value:.3g}'):f}"


def _cell(value: float | None, title: str) -> Cell:
    return Cell("-" if value is None else amount(value), value, title=title)


def section(configs: Sequence[Config], prices: Prices) -> Section:
    """The cost table (one row per configuration) with the prices and formulas stated."""
    by = figures.by_name()
    per_request = by["energy_per_request_j"]
    per_token = by["energy_per_token_j"]
    cur = prices.currency
    price = prices.electricity_per_kwh
    headers = ["config", "requests", "in tokens", "out tokens", "kWh/1k req"]
    if price is not None:
        headers += [f"energy {cur}/1k req", f"energy {cur}/1M out tok"]
    headers += [f"{api.name} {cur}/1k req" for api in prices.api]
    rows: list[list[Cell]] = []
    no_energy: dict[str, list[str]] = {}
    no_tokens: list[str] = []
    for c in configs:
        s = c.summary
        j_req, j_tok = per_request.value(s), per_token.value(s)
        tin, tout = by["prompt_tokens_mean"].value(s), by["output_tokens_mean"].value(s)
        row = [Cell(c.label or c.key, title=c.key),
               Cell(str(s.get("requests", "-")), s.get("requests"), title="summary.requests"),
               _cell(tin, "summary.prompt_tokens_mean"),
               _cell(tout, "summary.completion_tokens_mean"),
               _cell(None if j_req is None else kwh_per_1k_requests(j_req),
                     f"{per_request.source} x 1000 / 3.6e6")]
        if j_req is None:
            no_energy.setdefault(absent_reason(c, per_request), []).append(c.label or c.key)
        elif j_tok is None and price is not None:
            no_energy.setdefault(absent_reason(c, per_token), []).append(c.label or c.key)
        if price is not None:
            row += [
                _cell(None if j_req is None else energy_cost_per_1k_requests(j_req, price),
                      f"{per_request.source} x 1000 / 3.6e6 x {price:g} {cur}/kWh"),
                _cell(None if j_tok is None else energy_cost_per_mtok(j_tok, price),
                      f"{per_token.source} x 1e6 / 3.6e6 x {price:g} {cur}/kWh"),
            ]
        if tin is None or tout is None:
            no_tokens.append(c.label or c.key)
        for api in prices.api:
            row.append(_cell(
                None if tin is None or tout is None else api_cost_per_1k_requests(tin, tout, api),
                f"1000 x (summary.prompt_tokens_mean x {api.input_per_mtok:g} + "
                f"summary.completion_tokens_mean x {api.output_per_mtok:g}) / 1e6"))
        rows.append(row)
    notes = [f"no energy figures for {', '.join(names)} ({why}): their energy cost is absent, "
             "not zero" for why, names in no_energy.items()]
    if no_tokens:
        notes.append(f"no token counts for {', '.join(no_tokens)} (no successful request): "
                     "no API cost")
    if price is None:
        notes.append("no electricity price (--electricity-price): the energy cost columns are "
                     "left out")
    if not prices.api:
        notes.append("no API prices: add --api-price NAME=IN/OUT (prices per million input and "
                     "output tokens, e.g. --api-price gpt-x=2.50/10.00) to compare with a "
                     "hosted API")
    table = Table("cost", f"Cost per {REQUESTS:,} requests ({cur})", headers, rows,
                  set(range(1, len(headers))), notes)
    blocks: list[Block] = [Paragraph(_assumptions(prices)), table]
    if prices.api:
        blocks.insert(1, Bullets([f"{api.name}: {api.input_per_mtok:g} {cur} per 1M input "
                                  f"tokens, {api.output_per_mtok:g} {cur} per 1M output tokens"
                                  for api in prices.api]))
    return Section("cost", "Cost", blocks)


def _assumptions(prices: Prices) -> str:
    cur = prices.currency
    price = prices.electricity_per_kwh
    if price is None:
        electricity = "No electricity price is given, so the energy is shown in kWh only."
    else:
        origin = "given" if prices.electricity_source == "given" else \
            "the default; set yours with --electricity-price"
        electricity = (f"Electricity: {price:g} {cur}/kWh ({origin}). Energy cost per "
                       f"{REQUESTS:,} requests = J/request x {REQUESTS} / 3.6e6 kWh x price; "
                       f"per 1M output tokens = J/token x 1e6 / 3.6e6 x price. The energy is "
                       "what each run's power meter measured over its measured requests "
                       "(see power in the results).")
    api = (f"API cost per {REQUESTS:,} requests = {REQUESTS} x (mean prompt tokens x input "
           "price + mean completion tokens x output price) / 1e6, over the successful "
           "requests' means. The token counts are this model's tokenizer's: a hosted model "
           "counts its own tokens (image tokens especially differ), so this is an estimate "
           "of the same token volume at that price, not of the hosted model's bill.")
    return f"{electricity} {api}"

