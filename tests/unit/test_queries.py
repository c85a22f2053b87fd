"""Query templating: names are escaped, shortcuts expand to the guards a tier-1 service needs."""

from __future__ import annotations

import re

from guarded.api.analysis import Analysis
from guarded.core.analysis import effective_metrics, escape_label_value, render, selectors


def test_a_hostile_namespace_or_name_cannot_break_out_of_the_label_matcher() -> None:
    sel = selectors('shop"} or vector(1) or {x="', "web.v2")
    # The quote is escaped, so the whole value stays one string literal.
    assert 'namespace="shop\\"} or vector(1) or {x=\\""' in sel.canary
    # Regex metacharacters of the name match literally.
    assert 'pod=~"web\\\\.v2-canary-' in sel.canary
    query = render("sum(increase(x{{{selector}}}[{{interval}}]))", selector=sel.stable, interval="5s",
                   namespace="n", target="t")
    unescaped_quotes = re.findall(r'(?<!\\)"', query)
    assert len(unescaped_quotes) == 4, "two label matchers, each one quoted literal"


def test_escape_label_value() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_two_counter_names_give_an_order_rate_and_an_error_rate_guard() -> None:
    metrics = {m.name: m for m in effective_metrics(Analysis(requests="http_requests_total", orders="orders_total"))}
    assert set(metrics) == {"order-rate", "error-rate"}
    assert metrics["order-rate"].direction == "HigherIsBetter"
    assert metrics["error-rate"].direction == "LowerIsBetter"
    sel = selectors("shop", "shop")
    errors = render(metrics["error-rate"].events, selector=sel.canary, interval="5s", namespace="shop", target="shop")
    assert errors == ('sum(increase(http_requests_total{namespace="shop",'
                      'pod=~"shop-canary-[a-z0-9]{1,10}-[a-z0-9]{5}",code=~"5.."}[5s]))')


def test_the_stable_selector_does_not_match_canary_pods() -> None:
    sel = selectors("shop", "shop")
    stable = re.search(r'pod=~"([^"]+)"', sel.stable).group(1)  # type: ignore[union-attr]
    canary = re.search(r'pod=~"([^"]+)"', sel.canary).group(1)  # type: ignore[union-attr]
    assert re.fullmatch(stable, "shop-7d4b9c8f6d-x2k9p")
    assert not re.fullmatch(stable, "shop-canary-5d9b556f9d-j6s4k")
    assert re.fullmatch(canary, "shop-canary-5d9b556f9d-j6s4k")
    assert not re.fullmatch(canary, "shop-7d4b9c8f6d-x2k9p")
