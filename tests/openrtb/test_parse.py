from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidfilter.openrtb import InvalidRequestError, ParseLimits, parse_bid_request
from bidfilter.openrtb.model import MAX_STRING_CHARS


def request(**fields: Any) -> bytes:
    body: dict[str, Any] = {"id": "r1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
    body.update(fields)
    return json.dumps(body).encode()


def refused(raw: bytes | str, limits: ParseLimits | None = None) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        if limits is None:
            parse_bid_request(raw)
        else:
            parse_bid_request(raw, limits)
    return caught.value


def test_minimal_request_parses() -> None:
    parsed = parse_bid_request(request(tmax=120))
    assert parsed.id == "r1"
    assert parsed.imp[0].banner is not None
    assert parsed.imp[0].banner.w == 300
    assert parsed.tmax == 120


def test_str_input_parses() -> None:
    assert parse_bid_request(request().decode()).id == "r1"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"imp": [{"id": "1", "banner": {}}]}', "id"),
        (b'{"id": "r"}', "imp"),
        (b'{"id": "r", "imp": []}', "imp"),
        (b'{"id": "", "imp": [{"id": "1", "banner": {}}]}', "id"),
        (b'{"id": 5, "imp": [{"id": "1", "banner": {}}]}', "id"),
        (b'{"id": "r", "imp": [{"banner": {}}]}', "imp[0].id"),
        (b'{"id": "r", "imp": [{"id": "1", "banner": {"w": "300"}}]}', "imp[0].banner.w"),
        (b'{"id": "r", "imp": [{"id": "1", "banner": {"w": -1}}]}', "imp[0].banner.w"),
        (b'{"id": "r", "imp": [{"id": "1", "banner": {}, "bidfloor": -0.5}]}', "imp[0].bidfloor"),
        (b'{"id": "r", "imp": [{"id": "1"}]}', "imp[0]"),
        (
            b'{"id": "r", "imp": [{"id": "1", "video": {}}], "device": {"geo": {"lat": "x"}}}',
            "device.geo.lat",
        ),
        (b'{"id": "r", "imp": [{"id": "1", "video": {}}], "regs": {"gdpr": 3}}', "regs.gdpr"),
        (b'{"id": "r", "imp": [{"id": "1", "video": {}}], "tmax": -5}', "tmax"),
        (b"[1, 2]", "$"),
        (b'{"id": "r", "imp": [', "$"),
        (b"", "$"),
    ],
)
def test_invalid_requests_name_the_field(raw: bytes, field: str) -> None:
    assert refused(raw).field == field


def test_bad_utf8_is_refused_even_in_skipped_fields() -> None:
    raw = b'{"id": "r", "imp": [{"id": "1", "banner": {}}], "unknown": "\xff\xfe"}'
    error = refused(raw)
    assert error.field == "$"
    assert "UTF-8" in error.message


def test_absurd_depth_is_refused() -> None:
    deep = (
        b'{"id": "r", "imp": [{"id": "1", "banner": {}}], "x": '
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}"
    )
    assert "deep" in refused(deep).message


def test_size_limit() -> None:
    error = refused(request(), ParseLimits(max_bytes=20))
    assert error.field == "$"
    assert "limit" in error.message


def test_string_length_limit_names_the_field() -> None:
    domain = "a" * (MAX_STRING_CHARS + 1)
    body = f'{{"id":"x","imp":[{{"id":"1","banner":{{}}}}],"site":{{"domain":"{domain}"}}}}'
    with pytest.raises(InvalidRequestError) as caught:
        parse_bid_request(body.encode())
    assert caught.value.field == "site.domain"
    assert str(MAX_STRING_CHARS) in caught.value.message
    accepted = body.replace(domain, domain[1:])
    assert parse_bid_request(accepted.encode()).site is not None


def test_imp_count_limit() -> None:
    imps = [{"id": str(i), "banner": {}} for i in range(5)]
    assert refused(request(imp=imps), ParseLimits(max_imps=4)).field == "imp"


def test_unknown_fields_and_ext_are_ignored() -> None:
    parsed = parse_bid_request(
        request(ext={"prebid": {"deep": [[[[1]]]]}}, unknown={"a": 1}, site={"id": "s", "x": [1]})
    )
    assert parsed.site is not None
    assert parsed.site.id == "s"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    try:
        parse_bid_request(raw)
    except InvalidRequestError as error:
        assert error.field


@given(
    st.dictionaries(
        st.sampled_from(
            ["id", "imp", "site", "app", "device", "user", "regs", "source", "tmax", "ext"]
        ),
        json_values,
        max_size=6,
    )
)
def test_arbitrary_json_objects_never_crash(body: dict[str, Any]) -> None:
    try:
        parse_bid_request(json.dumps(body).encode())
    except InvalidRequestError as error:
        assert error.field
