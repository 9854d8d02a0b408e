"""Every request in the OpenRTB corpus (tests/data) parses; every invalid/ file: a a pinned verdict.

bidfilter refuses what breaks OpenRTB rules on fields it reads (an imp with no id or no media
object, negative sizes, a gdpr flag that is not 0/1) and accepts what prebid refuses for its own
reasons (unknown bidders, bad ``ext`` content, negative values in fields no feature reads).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bidfilter.openrtb import InvalidRequestError, parse_bid_request

CORPUS = Path(__file__).resolve().parents[1] / "data" / "openrtb-corpus"
VALID = sorted(CORPUS.glob("*.json"))
assert len(VALID) > 600, f"the OpenRTB corpus is missing from {CORPUS}"
INVALID = sorted((CORPUS / "invalid").glob("*.json"))

# file (without the "prebid__" prefix) -> the field bidfilter names when refusing it
REFUSED = {
    "adapters-boldwin-boldwintest-supplemental-bad-media-type.json": "imp[0]",
    "adapters-nobid-nobidtest-supplemental-bad-mediatype.json": "imp[0]",
    "endpoints-openrtb2-sample-requests-invalid-stored-bad-stored-req.json": "imp[0].id",
    "endpoints-openrtb2-sample-requests-invalid-whole-banner-h-negative.json": "imp[0].banner.h",
    "endpoints-openrtb2-sample-requests-invalid-whole-banner-w-negative.json": "imp[0].banner.w",
    "endpoints-openrtb2-sample-requests-invalid-whole-format-h-negative.json": (
        "imp[0].banner.format[0].h"
    ),
    "endpoints-openrtb2-sample-requests-invalid-whole-format-w-negative.json": (
        "imp[0].banner.format[0].w"
    ),
    "endpoints-openrtb2-sample-requests-invalid-whole-imp-empty-object.json": "imp[0].id",
    "endpoints-openrtb2-sample-requests-invalid-whole-imp-no-type.json": "imp[0]",
    "endpoints-openrtb2-sample-requests-invalid-whole-metric-empty-object.json": "imp[0]",
    "endpoints-openrtb2-sample-requests-invalid-whole-regs-gdpr-invalid.json": "regs.gdpr",
    "endpoints-openrtb2-sample-requests-invalid-whole-video-h-negative.json": "imp[0].video.h",
    "endpoints-openrtb2-sample-requests-invalid-whole-video-w-negative.json": "imp[0].video.w",
}


def test_corpus_is_present() -> None:
    assert len(VALID) >= 600
    assert len(INVALID) >= 70


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_every_valid_request_parses(path: Path) -> None:
    request = parse_bid_request(path.read_bytes())
    assert request.id
    assert request.imp


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_folder_verdicts(path: Path) -> None:
    expected_field = REFUSED.get(path.name.removeprefix("prebid__"))
    if expected_field is None:
        assert parse_bid_request(path.read_bytes()).imp
    else:
        with pytest.raises(InvalidRequestError) as caught:
            parse_bid_request(path.read_bytes())
        assert caught.value.field == expected_field
