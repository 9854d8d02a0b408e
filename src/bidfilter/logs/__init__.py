"""Auction logs: the training data (one record per bid request, with each partner's outcome)."""

from bidfilter.logs.import_summary import ImportSummary
from bidfilter.logs.jsonl import import_jsonl
from bidfilter.logs.schema import (
    LOG_SCHEMA,
    PARTNER_OUTCOME_TYPE,
    AuctionLogWriter,
    LogFormatError,
    PartnerOutcome,
    auction_batch,
    conform_batch,
    iter_log_batches,
    log_files,
    logged_partners,
    read_jsonl,
    validate_batch,
)

__all__ = [
    "LOG_SCHEMA",
    "PARTNER_OUTCOME_TYPE",
    "AuctionLogWriter",
    "ImportSummary",
    "LogFormatError",
    "PartnerOutcome",
    "auction_batch",
    "conform_batch",
    "import_jsonl",
    "iter_log_batches",
    "log_files",
    "logged_partners",
    "read_jsonl",
    "validate_batch",
]
