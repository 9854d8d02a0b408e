"""A sans-IO Apache Thrift codec for the BidFilter service (``idl/bidfilter.thrift``).

Bytes in, messages out, and the reverse; no sockets, no event loop, no clocks. The server's
connection protocol feeds a ``ThriftConnectionDecoder`` and writes what its ``ReplyEncoder``
returns; a client or a load generator pairs a ``CallEncoder`` with a ``ReplyDecoder``.

Modules: ``types`` (the IDL's structs as Python values), ``structs`` (the IDL's structs and
methods as tables, and the walker that builds each protocol's codec from them), ``binary`` and
``compact`` (each protocol's primitives and fast paths), ``codec`` (what they share),
``messages`` (calls and replies), ``framing`` (streams: framed or not, protocol detection,
limits), ``errors``.
"""

from bidfilter.thrift.codec import MessageType, Protocol
from bidfilter.thrift.errors import (
    ApplicationExceptionType,
    MessageTooLargeError,
    RemoteApplicationError,
    RemoteInvalidRequestError,
    ThriftEncodeError,
    ThriftError,
    ThriftProtocolError,
)
from bidfilter.thrift.framing import (
    DEFAULT_MAX_MESSAGE_BYTES,
    CallEncoder,
    ReplyDecoder,
    ReplyEncoder,
    ThriftConnectionDecoder,
    Transport,
    frame,
)
from bidfilter.thrift.messages import (
    METHODS,
    Call,
    DecodedCall,
    RejectedCall,
    Reply,
    decode_call,
    decode_reply,
    encode_application_exception,
    encode_filter_batch_call,
    encode_filter_batch_reply,
    encode_filter_call,
    encode_filter_reply,
    encode_invalid_request_reply,
    encode_model_info_call,
    encode_model_info_reply,
    encode_ping_call,
    encode_ping_reply,
    encode_rejection,
    encode_report_outcomes_call,
    encode_report_outcomes_reply,
)
from bidfilter.thrift.types import (
    AuctionOutcome,
    FilterRequest,
    FilterResponse,
    InvalidRequest,
    ModelInfo,
    Outcome,
    OutcomeReceipt,
    PartnerDecision,
    PartnerOutcome,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "METHODS",
    "ApplicationExceptionType",
    "AuctionOutcome",
    "Call",
    "CallEncoder",
    "DecodedCall",
    "FilterRequest",
    "FilterResponse",
    "InvalidRequest",
    "MessageTooLargeError",
    "MessageType",
    "ModelInfo",
    "Outcome",
    "OutcomeReceipt",
    "PartnerDecision",
    "PartnerOutcome",
    "Protocol",
    "RejectedCall",
    "RemoteApplicationError",
    "RemoteInvalidRequestError",
    "Reply",
    "ReplyDecoder",
    "ReplyEncoder",
    "ThriftConnectionDecoder",
    "ThriftEncodeError",
    "ThriftError",
    "ThriftProtocolError",
    "Transport",
    "decode_call",
    "decode_reply",
    "encode_application_exception",
    "encode_filter_batch_call",
    "encode_filter_batch_reply",
    "encode_filter_call",
    "encode_filter_reply",
    "encode_invalid_request_reply",
    "encode_model_info_call",
    "encode_model_info_reply",
    "encode_ping_call",
    "encode_ping_reply",
    "encode_rejection",
    "encode_report_outcomes_call",
    "encode_report_outcomes_reply",
    "frame",
]
