"""The cost section: exact arithmetic from the stated formulas, the price options'
parsing, and an absent energy reading giving an absent cost (never zero)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_vlmbench.report.cost import (
    ApiPrice,
    Prices,
    amount,
    api_cost_per_1k_requests,
    energy_cost_per_1k_requests,
    energy_cost_per_mtok,
    kwh_per_1k_requests,
    parse_api_price,
    section,
)
from pytest_vlmbench.report.model import Paragraph, Table
from pytest_vlmbench.report.sources import Config
from tests.report_data import RAPL, build, entry

METERED = {"energy_j": 108.0, "energy_per_request_j": 36.0, "energy_per_token_j": 3.6,
           "tokens_per_s_per_w": 0.3, "warnings": []}
HOSTED = ApiPrice("hosted", 2.5, 10.0)


def table(prices: Prices, configs: list[Config]) -> Table:
    sec = section(configs, prices)
    assert sec.id == "cost"
    return next(b for b in sec.blocks if isinstance(b, Table))


def cells(t: Table, row: int) -> dict[str, str]:
    return {h: c.text for h, c in zip(t.headers, t.rows[row], strict=True)}


def test_energy_cost_arithmetic() -> None:
    assert kwh_per_1k_requests(36.0) == 0.01
    assert energy_cost_per_1k_requests(36.0, 0.30) == 0.003
    assert energy_cost_per_mtok(3.6, 0.30) == 0.3  # 3.6 J/token: 1 kWh per 1M tokens


def test_api_cost_arithmetic() -> None:
    assert api_cost_per_1k_requests(1000.0, 500.0, HOSTED) == 7.5
    assert api_cost_per_1k_requests(1000.0, 0.0, ApiPrice("in", 1.0, 0.0)) == 1.0


def test_amounts_show_three_significant_figures_plainly() -> None:
    assert [amount(v) for v in (0.003, 7.5, 1234.5, 1.23e-5, 0.1 + 0.2)] == [
        "0.003", "7.5", "1230", "0.0000123", "0.3"]


def test_cost_table_cells(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", energy=METERED, prompt_tokens_mean=1000.0,
                                    completion_tokens_mean=500.0))
    t = table(Prices(0.30, "USD", [HOSTED]), configs)
    assert cells(t, 0) == {
        "config": "a q4_k_m", "requests": "3", "in tokens": "1000", "out tokens": "500",
        "kWh/1k req": "0.01", "energy USD/1k req": "0.003", "energy USD/1M out tok": "0.3",
        "hosted USD/1k req": "7.5"}
    assert t.rows[0][5].sort == 0.003
    assert t.rows[0][5].title == ("summary.energy.energy_per_request_j x 1000 / 3.6e6 x "
                                  "0.3 USD/kWh")
    assert not any("energy" in n for n in t.notes)


def test_absent_energy_is_an_absent_cost_with_the_reason(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", energy=METERED), entry("b"))
    t = table(Prices(0.30, "EUR", []), configs)
    row = cells(t, 1)
    assert row["kWh/1k req"] == "-"
    assert row["energy EUR/1k req"] == "-"
    assert row["energy EUR/1M out tok"] == "-"
    assert t.rows[1][5].sort is None  # sorts last, never as zero
    notes = [n for n in t.notes if n.startswith("no energy figures")]
    assert notes == [f"no energy figures for b q4_k_m (no energy reading: {RAPL} (a virtual "
                     "machine, or the intel_rapl_msr / rapl driver is not loaded)): their "
                     "energy cost is absent, not zero"]


def test_no_electricity_price_leaves_the_energy_cost_out(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", energy=METERED))
    t = table(Prices(None, "USD", [HOSTED]), configs)
    assert t.headers == ["config", "requests", "in tokens", "out tokens", "kWh/1k req",
                         "hosted USD/1k req"]
    assert cells(t, 0)["kWh/1k req"] == "0.01"
    assert ("no electricity price (--electricity-price): the energy cost columns are left out"
            in t.notes)


def test_no_api_prices_says_how_to_add_them(tmp_path: Path) -> None:
    t = table(Prices(0.30, "USD", []), build(tmp_path, entry("a")))
    assert any("--api-price NAME=IN/OUT" in n and "per million" in n for n in t.notes)


def test_no_successful_request_has_no_api_cost(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", prompt_tokens_mean=None, completion_tokens_mean=None))
    t = table(Prices(None, "USD", [HOSTED]), configs)
    assert cells(t, 0)["hosted USD/1k req"] == "-"
    assert "no token counts for a q4_k_m (no successful request): no API cost" in t.notes


def test_the_assumptions_are_stated(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a"))
    given = section(configs, Prices(0.30, "USD", [HOSTED]))
    text = " ".join(b.text for b in given.blocks if isinstance(b, Paragraph))
    assert "0.3 USD/kWh (given)" in text
    assert "this model's tokenizer's" in text
    assert "not of the hosted model's bill" in text
    default = section(configs, Prices(0.30, "USD", [], electricity_given=False))
    text = " ".join(b.text for b in default.blocks if isinstance(b, Paragraph))
    assert "0.3 USD/kWh (the default; set yours with --electricity-price)" in text


def test_parse_api_price() -> None:
    assert parse_api_price("gpt-x=2.50/10") == ApiPrice("gpt-x", 2.5, 10.0)
    assert parse_api_price(" local = 0/0 ") == ApiPrice("local", 0.0, 0.0)


@pytest.mark.parametrize("spec", [
    "gpt", "=1/2", "gpt=1", "gpt=1/2/3", "gpt=-1/2", "gpt=a/2", "gpt=1/", "gpt=nan/1",
    "gpt=inf/1", "gpt=1/-0.5",
])
def test_parse_api_price_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="NAME=IN/OUT") as info:
        parse_api_price(spec)
    assert "\n" not in str(info.value)


def test_negative_electricity_price_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        Prices(-0.1, "USD", [])


def test_energy_without_tokens_has_no_cost_per_token(tmp_path: Path) -> None:
    configs = build(tmp_path, entry("a", energy={**METERED, "energy_per_token_j": None}))
    t = table(Prices(0.30, "USD", []), configs)
    row = cells(t, 0)
    assert row["energy USD/1k req"] == "0.003"
    assert row["energy USD/1M out tok"] == "-"
    assert ("no energy figures for a q4_k_m (summary.energy.energy_per_token_j is absent): "
            "their energy cost is absent, not zero") in t.notes
