"""Each protocol's registered fast paths agree with its generic codec, built from the tables alone.

Wherever a fast path answers it must give the generic codec's value or bytes; wherever it
hands a case back, the outcome (a value, an error naming its field, "need N more bytes") must
still be the generic one. Mutated messages reach the hand-back paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from thrift_samples import (
    MODEL_INFOS,
    REQUESTS,
    RESPONSES,
    filter_requests,
    filter_responses,
    model_infos,
)

from bidfilter.thrift import FilterRequest, FilterResponse, ModelInfo, binary, compact
from bidfilter.thrift.codec import MAX_DEPTH, Codec, encode_with
from bidfilter.thrift.errors import IncompleteMessage

PAIRS = [
    pytest.param(binary.CODEC, binary.GENERIC, id="binary"),
    pytest.param(compact.CODEC, compact.GENERIC, id="compact"),
]


def outcome(read: Callable[[bytes, int, int], Any], data: bytes) -> object:
    """What ``read`` makes of ``data``: its value and end, or its error, compared in full. As
    its repr: a mutated double may decode to a NaN, which no value equals, not even itself."""
    try:
        return repr(read(data, 0, MAX_DEPTH))
    except IncompleteMessage as incomplete:
        return (IncompleteMessage, incomplete.needed, incomplete.field)
    except Exception as error:  # any outcome is compared: its type, field and text
        return (type(error), getattr(error, "field", None), str(error))


def mutations() -> st.SearchStrategy[Callable[[bytes], bytes]]:
    """Change, drop or insert one byte, or cut the bytes short."""

    def mutate(kind: str, where: float, byte: int) -> Callable[[bytes], bytes]:
        def apply(data: bytes) -> bytes:
            at = int(where * len(data))
            if kind == "set":
                return data[:at] + bytes((byte,)) + data[at + 1 :]
            if kind == "drop":
                return data[:at] + data[at + 1 :]
            if kind == "insert":
                return data[:at] + bytes((byte,)) + data[at:]
            return data[:at]

        return apply

    return st.builds(
        mutate,
        st.sampled_from(["set", "drop", "insert", "cut"]),
        st.floats(0, 1, exclude_max=True),
        st.integers(0, 255),
    )


@pytest.mark.parametrize(("fast", "generic"), PAIRS)
@given(request=filter_requests, mutate=mutations())
def test_filter_args(fast: Codec, generic: Codec, request: FilterRequest, mutate: Any) -> None:
    data = encode_with(fast.args_writers["filter"], request)
    assert data == encode_with(generic.args_writers["filter"], request)
    assert fast.args_readers["filter"](data, 0, MAX_DEPTH) == (request, len(data))
    changed = mutate(data)
    assert outcome(fast.args_readers["filter"], changed) == outcome(
        generic.args_readers["filter"], changed
    )


@pytest.mark.parametrize(("fast", "generic"), PAIRS)
@given(response=filter_responses, mutate=mutations())
def test_filter_response(
    fast: Codec, generic: Codec, response: FilterResponse, mutate: Any
) -> None:
    data = encode_with(fast.write_filter_response, response)
    assert data == encode_with(generic.write_filter_response, response)
    assert fast.read_filter_response(data, 0, MAX_DEPTH) == (response, len(data))
    changed = mutate(data)
    assert outcome(fast.read_filter_response, changed) == outcome(
        generic.read_filter_response, changed
    )


@pytest.mark.parametrize(("fast", "generic"), PAIRS)
@given(info=model_infos, mutate=mutations())
def test_model_info(fast: Codec, generic: Codec, info: ModelInfo, mutate: Any) -> None:
    data = encode_with(fast.write_model_info, info)
    assert data == encode_with(generic.write_model_info, info)
    changed = mutate(data)
    assert outcome(fast.read_model_info, changed) == outcome(generic.read_model_info, changed)


@pytest.mark.parametrize(("fast", "generic"), PAIRS)
def test_samples(fast: Codec, generic: Codec) -> None:
    for request in REQUESTS.values():
        data = encode_with(generic.args_writers["filter"], request)
        assert fast.args_readers["filter"](data, 0, MAX_DEPTH) == (request, len(data))
    for response in RESPONSES.values():
        data = encode_with(generic.result_writers["filter"], response)
        assert data == encode_with(fast.result_writers["filter"], response)
        assert fast.result_readers["filter"](data, 0, MAX_DEPTH) == (response, len(data))
    for info in MODEL_INFOS.values():
        data = encode_with(generic.write_model_info, info)
        assert fast.read_model_info(data, 0, MAX_DEPTH) == (info, len(data))


@pytest.mark.parametrize(("fast", "generic"), PAIRS)
def test_long_names_and_lists_are_handed_back(fast: Codec, generic: Codec) -> None:
    """Past the compact fast paths' one-byte lengths: the generic reader's, same answer."""
    request = FilterRequest(b"{}", ["x" * 200, *"abcdefghijklmnopqrst"], 7)
    data = encode_with(generic.args_writers["filter"], request)
    assert fast.args_readers["filter"](data, 0, MAX_DEPTH) == (request, len(data))
    response = RESPONSES["scored"]
    long_partner = response.decisions[0].__class__("p" * 300, 0.5, True, False, 0.1)
    response = FilterResponse(
        response.request_id, [long_partner, *response.decisions], "v", response.outcome
    )
    data = encode_with(generic.write_filter_response, response)
    assert fast.read_filter_response(data, 0, MAX_DEPTH) == (response, len(data))
