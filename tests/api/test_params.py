"""Upstream's parameter checks (api.md §1.3) and the body parsers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.api.params import (
    MalformedBody,
    check_int,
    check_string,
    check_truthy,
    js_truthy,
    parse_form,
    parse_json,
)


@pytest.mark.parametrize(("value", "expected"), [
    (12, 12), ("12", 12), ("12.00", 12), ("12.", 12), ("-3", -3), (12.0, 12), (0, 0),
    ("12.5", None), (12.5, None), ("abc", None), ("", None), (" 12", None), ("1e3", None),
    (None, None), (True, None), (False, None), ([1], None), (float("nan"), None),
])
def test_check_int(value: object, expected: int | None) -> None:
    assert check_int(value) == expected


def test_check_int_positive() -> None:
    assert check_int("0", positive=True) is None
    assert check_int(-1, positive=True) is None
    assert check_int("5", positive=True) == 5


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_check_int_round_trips_integers(n: int) -> None:
    assert check_int(n) == n
    assert check_int(str(n)) == n
    assert check_int(f"{n}.000") == n


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (1, True), (1.0, True), ("1", True), ("true", True), ("TRUE", True),
    ("on", True), ("On", True), (False, False), (0, False), ("0", False), ("yes", False),
    ("false", False), (None, False), (2, False), ("", False), ([True], False),
])
def test_check_truthy(value: object, expected: bool) -> None:
    assert check_truthy(value) is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("main", "main"), ("", None), ("null", None), ("undefined", None), (5, None), (None, None),
])
def test_check_string(value: object, expected: str | None) -> None:
    assert check_string(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), (False, False), (0, False), ("", False), (float("nan"), False),
    ("false", True), ("0", True), ([], True), ({}, True), (1, True), (True, True),
])
def test_js_truthy(value: object, expected: bool) -> None:
    assert js_truthy(value) is expected


def test_parse_json() -> None:
    assert parse_json(b"") == {}
    assert parse_json(b"  \n") == {}
    assert parse_json(b' {"a": [1, 2]} ') == {"a": [1, 2]}
    assert parse_json(b"[1]") == [1]
    assert parse_json(b'\xef\xbb\xbf{"bom": true}') == {"bom": True}
    for raw in (b"1", b"null", b'"s"', b"{", b'{"a": Infinity}', b"[1,]"):
        with pytest.raises(MalformedBody):
            parse_json(raw)


def test_parse_form() -> None:
    assert parse_form(b"appId=1&force=true") == {"appId": "1", "force": "true"}
    assert parse_form(b"a=1&a=2&a=3") == {"a": ["1", "2", "3"]}
    assert parse_form(b"a[b]=1&a[c]=2") == {"a": {"b": "1", "c": "2"}}
    assert parse_form(b"x[]=1&x[]=2") == {"x": ["1", "2"]}
    assert parse_form(b"empty=&plus=a+b&pct=%2F") == {"empty": "", "plus": "a b", "pct": "/"}
    assert parse_form(b"") == {}
