"""Coverage-guided fuzzing (atheris, libFuzzer) of the OpenRTB parser and the features it feeds.

    python fuzz/fuzz_openrtb_parser.py [libFuzzer flags] [CORPUS_DIR]     (scripts/fuzz runs it)

Seeds: every request of the shared OpenRTB corpus, valid and invalid. A dictionary of the
model's field names and of JSON numbers at type boundaries steers libFuzzer's byte mutations
towards the fields the parser keeps, where the checks are; half the mutations are structural
(one JSON node replaced by a boundary value, see ``mutate``).

A crash is any exception but ``InvalidRequestError``, or a broken promise:

- a refusal names a field and says what is wrong;
- the ``str`` path agrees with the ``bytes`` path (the same request, or a refusal of the same
  field); invalid UTF-8, which becomes lone surrogates in the ``str``, is refused by both;
- an accepted request holds what the parser checks, is unchanged by an encode and re-parse,
  and its feature row has the spec's width, every value finite or NaN, the same every time.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import atheris
import msgspec
import numpy as np
from seed_corpus import corpus_directory, openrtb_documents, write_dictionary, write_seeds

# Only bidfilter is instrumented: msgspec is C (no Python coverage to collect) and numpy's
# Python layer would only slow every run down.
with atheris.instrument_imports(include=["bidfilter"]):
    from bidfilter.features import CATEGORICAL_FEATURES, FeatureEncoder, FeatureSpec
    from bidfilter.openrtb import (
        DEFAULT_LIMITS,
        BidRequest,
        InvalidRequestError,
        model,
        parse_bid_request,
    )
    from bidfilter.openrtb.parse import MAX_BIDFLOOR

TS_MS = 1_700_000_000_000
ENCODER = FeatureEncoder(
    FeatureSpec(
        vocabularies={name: ["USA", "300x250", "ios"] for name in CATEGORICAL_FEATURES},
        partners=["dsp-1"],
    )
)

_BOUNDARY_NUMBERS = (
    b"0",
    b"-0",
    b"-1",
    b"1.5",
    b"-0.0",
    b"1e9",
    b"1e10",
    b"1e39",
    b"1e308",
    b"1e400",
    b"2147483648",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"1" + b"0" * 400,
    b"NaN",
    b"Infinity",
)
_JSON_VALUES = (b"null", b"true", b"false", b'""', b"[]", b"{}")
_JSON_TOKENS = (b"{", b"}", b"[", b"]", b":", b",", *_JSON_VALUES)
_STRINGS = (b'"USD"', b'"GBP"', b'"JPY"', b'"XXX"', b'"1YNN"', b'"\\ud800"', b'"\\u0000"')


def dictionary_tokens() -> list[bytes]:
    names = {
        field.encode_name
        for struct in vars(model).values()
        if isinstance(struct, type) and issubclass(struct, msgspec.Struct)
        for field in msgspec.structs.fields(struct)
    }
    return [
        *(f'"{name}":'.encode() for name in names),
        *_BOUNDARY_NUMBERS,
        *_JSON_TOKENS,
        *_STRINGS,
    ]


def _node_paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    paths = []
    for key, child in items:
        paths.append((*path, key))
        if isinstance(child, dict | list):
            paths += _node_paths(child, (*path, key))
    return paths


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """Half the time, if the input is JSON, put a boundary value or a token in place of one
    node: byte mutations seldom turn ``"bidfloor": 1.5`` into ``1e308`` or an int into 400
    digits. Otherwise libFuzzer's own mutations."""
    chooser = random.Random(seed)
    if chooser.random() < 0.5:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            document = None
        paths = _node_paths(document) if isinstance(document, dict | list) else []
        if paths:
            path = chooser.choice(paths)
            parent = document
            for key in path[:-1]:
                parent = parent[key]
            marker = f"__fuzz_{seed}__"
            parent[path[-1]] = marker
            token = chooser.choice(_BOUNDARY_NUMBERS + _JSON_VALUES + _STRINGS)
            mutated = json.dumps(document).encode().replace(f'"{marker}"'.encode(), token)
            if len(mutated) <= max_size:
                return mutated
    mutated_bytes: bytes = atheris.Mutate(data, max_size)
    return mutated_bytes


def check_accepted(request: BidRequest) -> None:
    assert request.id and 1 <= len(request.imp) <= DEFAULT_LIMITS.max_imps, request
    assert request.tmax is None or request.tmax >= 0
    for imp in request.imp:
        assert imp.id
        assert any(media is not None for media in (imp.banner, imp.video, imp.audio, imp.native))
        assert 0 <= imp.bidfloor <= MAX_BIDFLOOR
        sizes = []
        if imp.banner is not None:
            sizes += [imp.banner.w, imp.banner.h]
            sizes += [size for fmt in imp.banner.format or () for size in (fmt.w, fmt.h)]
        if imp.video is not None:
            sizes += [imp.video.w, imp.video.h]
        assert all(size is None or size >= 0 for size in sizes)
    if request.regs is not None:
        assert request.regs.gdpr in (None, 0, 1) and request.regs.coppa in (None, 0, 1)

    assert parse_bid_request(msgspec.json.encode(request)) == request

    row = ENCODER.request_vector(request, TS_MS)
    assert row.shape == (ENCODER.width,), row.shape
    assert not np.isinf(row).any(), (row, request)
    assert np.array_equal(row, ENCODER.request_vector(request, TS_MS), equal_nan=True)


def outcome(raw: bytes | str) -> BidRequest | InvalidRequestError:
    try:
        request = parse_bid_request(raw)
    except InvalidRequestError as error:
        assert isinstance(error.field, str) and error.field, error
        assert isinstance(error.message, str) and error.message, error
        return error
    return request


def test_one_input(data: bytes) -> None:
    from_bytes = outcome(data)
    # surrogateescape keeps every input byte: invalid UTF-8 turns into lone surrogates.
    from_text = outcome(data.decode("utf-8", "surrogateescape"))
    if isinstance(from_bytes, InvalidRequestError):
        assert isinstance(from_text, InvalidRequestError), (from_bytes, from_text)
        assert from_text.field == from_bytes.field, (from_bytes, from_text)
        return
    assert from_text == from_bytes, (from_bytes, from_text)
    check_accepted(from_bytes)


def main() -> None:
    argv, corpus = corpus_directory(sys.argv, "openrtb-parser")
    seeds = write_seeds(corpus, openrtb_documents())
    if corpus.is_dir() and not any(arg.startswith("-dict=") for arg in argv):
        dictionary = write_dictionary(Path(f"{corpus}.dict"), dictionary_tokens())
        argv = [argv[0], f"-dict={dictionary}", *argv[1:]]
    print(f"fuzz: {seeds} seed requests in {corpus}", file=sys.stderr)
    atheris.Setup(argv, test_one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
