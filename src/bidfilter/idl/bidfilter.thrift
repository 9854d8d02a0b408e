/*
 * bidfilter wire contract: which demand partners should an OpenRTB bid request be sent to?
 *
 * Generate a client with the Apache Thrift compiler, e.g.
 *   thrift --gen java bidfilter.thrift    (or go, cpp, py, ...)
 * The server speaks the binary and compact protocols, framed or unframed, detected per connection.
 *
 * Compatibility: the names, field ids and types below never change. New methods and new
 * optional fields may be added.
 */

namespace java io.bidfilter.thrift
namespace go bidfilter
namespace cpp bidfilter
namespace py bidfilter_thrift

/* The request was refused; `field` names the offending field (a JSON path such as imp[0].id). */
exception InvalidRequest {
  1: string message,
  2: string field
}

/* How a response was produced. Every FAIL_OPEN_* answer sends the request to all candidates. */
enum Outcome {
  SCORED = 0,
  FAIL_OPEN_NO_MODEL = 1,
  FAIL_OPEN_DEADLINE = 2,
  FAIL_OPEN_OVERLOAD = 3,
  FAIL_OPEN_ERROR = 4
}

struct FilterRequest {
  /* OpenRTB 2.5/2.6 BidRequest, UTF-8 JSON. */
  1: required binary openrtb,
  /* Partners to decide on; absent = every partner the model knows. */
  2: optional list<string> candidates,
  /* Answer within this many milliseconds or fail open; absent = a share of the request's tmax;
     0 or less is refused (InvalidRequest, field deadline_ms). */
  3: optional i32 deadline_ms
}

struct PartnerDecision {
  1: required string partner,
  /* Predicted probability that the partner bids; -1 for a partner the model does not know. */
  2: required double bid_probability,
  /* Send the request to this partner. */
  3: required bool send,
  /* Sent although below the threshold, to keep learning about such requests. */
  4: required bool explore,
  5: required double threshold,
  /* The probability that the serving policy sends this request to this partner, for
     inverse-propensity weighting: 1.0 at or above the threshold, the partner's exploration
     probability below it (whether or not this request was explored), 1.0 for a partner the
     model does not know, on every FAIL_OPEN_* answer and in the control group. Absent from
     servers older than this field. */
  6: optional double propensity
}

struct FilterResponse {
  /* The OpenRTB request id. */
  1: required string request_id,
  /* One per candidate, in candidate order. */
  2: required list<PartnerDecision> decisions,
  3: required string model_version,
  4: required Outcome outcome,
  /* Time spent in the server, microseconds. */
  5: optional i64 server_us,
  /* Why this item of a batch was not scored (filter_batch only). */
  6: optional string error,
  /* true: this request is in the control group, chosen by its id: every candidate is sent,
     unfiltered (the decisions still carry the scores). Absent otherwise. */
  7: optional bool control,
  /* true: this server process holds the decision in its decision log (a sampled share of
     requests), waiting for report_outcomes: report this request's outcome on the same
     connection within the server's outcome wait. Absent otherwise (a report is not needed). */
  8: optional bool logged
}

struct ModelInfo {
  1: required string version,
  2: required list<string> partners,
  3: required map<string, double> thresholds,
  /* ISO-8601 UTC time the serving process loaded this version. */
  4: required string loaded_at
}

/* What the SSP did with one partner of a request after the auction. */
struct PartnerOutcome {
  1: required string partner,
  /* The SSP called this partner (whatever the decision said). */
  2: required bool called,
  /* The partner answered with a bid. Only with called. */
  3: optional bool bid,
  /* The bid's price (CPM, the request's currency), > 0 with a bid; absent or 0 otherwise. */
  4: optional double price,
  /* The call timed out, or failed: no answer, so no label (recorded as not sent). */
  5: optional bool timed_out,
  6: optional bool error
}

/* One request's outcome: every partner it was called on should be listed (one not listed
   counts as not called). */
struct AuctionOutcome {
  /* The OpenRTB request id, as FilterResponse.request_id gave it. */
  1: required string request_id,
  2: required list<PartnerOutcome> partners
}

/* What report_outcomes did with each outcome of the call; together they count them all. */
struct OutcomeReceipt {
  /* Joined with its logged decision: it will be written to the auction log. */
  1: required i32 accepted,
  /* No logged decision for this id in this server process: not sampled (the response had no
     logged flag), expired, or answered by another connection's process. Counted, not an
     error. */
  2: required i32 unknown,
  /* The decision's outcome was already reported: the first report stands. */
  3: required i32 duplicate
}

service BidFilter {
  FilterResponse filter(1: FilterRequest request) throws (1: InvalidRequest invalid),
  list<FilterResponse> filter_batch(1: list<FilterRequest> requests),
  ModelInfo model_info(),
  string ping(),
  /* After the auction: which partners the SSP called and which bid, at what price. Refused
     whole (InvalidRequest naming the field) if any outcome is malformed. */
  OutcomeReceipt report_outcomes(1: list<AuctionOutcome> outcomes) throws (1: InvalidRequest invalid)
}
