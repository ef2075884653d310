//! The stable machine-readable codes of the API: [`RejectCode`], why one
//! event of a batch was refused, and [`ErrorCode`], why a whole request was
//! (`docs/api.md`).
//!
//! Both travel as snake_case strings (`"too_late"`, `"unknown_project"`);
//! these enums are the one list of them, used by the node that sends them
//! and by the clients that read them. A code this version does not know (a
//! newer node's) is kept as [`RejectCode::Unknown`] / [`ErrorCode::Unknown`]
//! instead of failing the whole answer, which is why both enums are
//! `#[non_exhaustive]` and match on them needs a `_` arm.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A code this version of the protocol does not know, as it was received.
///
/// Only decoding makes one, so a known code is never held here: comparing
/// [`RejectCode`]s or [`ErrorCode`]s compares what they mean.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnknownCode(String);

impl UnknownCode {
    /// The code as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Defines a code enum: one variant per wire string, plus `Unknown`;
/// `as_str`, `Display`, `From<&str>` and serde as the string.
macro_rules! codes {
    (
        $(#[$enum_meta:meta])*
        $name:ident {
            $( $(#[$meta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$enum_meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$meta])* $variant, )+
            /// A code this version does not know (sent by a newer node).
            Unknown(UnknownCode),
        }

        impl $name {
            /// Every code this version knows, in declaration order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The code as it travels on the wire, e.g. `too_late`.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )+
                    $name::Unknown(unknown) => unknown.as_str(),
                }
            }

            /// The code of a wire string; [`Self::Unknown`] when this
            /// version does not know it.
            pub fn from_wire(code: &str) -> $name {
                match code {
                    $( $wire => $name::$variant, )+
                    other => $name::Unknown(UnknownCode(other.to_string())),
                }
            }

            /// Whether this version does not know the code.
            pub fn is_unknown(&self) -> bool {
                matches!(self, $name::Unknown(_))
            }
        }

        /// By wire string, so that sorted codes read alphabetically.
        impl Ord for $name {
            fn cmp(&self, other: &$name) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &$name) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(code: &str) -> $name {
                $name::from_wire(code)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let code = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                Ok($name::from_wire(&code))
            }
        }
    };
}

codes! {
    /// Why the node refused one event of a batch: `Rejection::reason`
    /// (`docs/api.md`, "Per-event reasons"). The rest of the batch is
    /// unaffected.
    RejectCode {
        /// A field has the wrong type or is missing; the message names it.
        MalformedEvent => "malformed_event",
        /// `id` is empty.
        EmptyId => "empty_id",
        /// `id` is longer than `ID_BYTES_MAX`.
        IdTooLong => "id_too_long",
        /// `visitor` is empty.
        EmptyVisitor => "empty_visitor",
        /// `visitor` is longer than `VISITOR_BYTES_MAX`.
        VisitorTooLong => "visitor_too_long",
        /// The event's project does not exist.
        UnknownProject => "unknown_project",
        /// `ts` is neither ms since the epoch nor an RFC 3339 time.
        InvalidTimestamp => "invalid_timestamp",
        /// `ts` is older than the node's clock minus the project's
        /// `allowed_lateness_ms`.
        TooLate => "too_late",
        /// `ts` is later than the node's clock plus the project's
        /// `future_skew_ms`.
        TooEarly => "too_early",
        /// A custom event without a `key`.
        MissingKey => "missing_key",
        /// `key` is empty or longer than `KEY_BYTES_MAX`.
        KeyTooLong => "key_too_long",
        /// A decision event without decisions.
        MissingDecision => "missing_decision",
        /// More decisions than `DECISIONS_MAX`.
        TooManyDecisions => "too_many_decisions",
        /// An empty or over-long experiment or variation name.
        InvalidDecision => "invalid_decision",
        /// More attributes than `ATTRIBUTES_MAX`. No longer sent: the
        /// extra attributes are dropped and the event kept; kept so that
        /// answers of older nodes still read.
        TooManyAttributes => "too_many_attributes",
        /// An attribute name or value over its length limit. No longer
        /// sent: an over-long value is cut and the event kept; kept so that
        /// answers of older nodes still read.
        AttributeTooLong => "attribute_too_long",
        /// `value` is not finite or over `VALUE_ABS_MAX`.
        InvalidValue => "invalid_value",
        /// The visitor already holds `VISITOR_EVENTS_MAX` events inside the
        /// lateness horizon.
        VisitorEventLimit => "visitor_event_limit",
        /// The event names an experiment, a variation or a conversion key
        /// that would take its project (or experiment) over a cardinality
        /// limit (`EXPERIMENTS_PER_PROJECT_MAX`,
        /// `VARIATIONS_PER_EXPERIMENT_MAX`, `CONVERSION_KEYS_PER_PROJECT_MAX`;
        /// `docs/ingest-formats.md`, "Cardinality limits"). Repeats until
        /// the project is changed or the names age out.
        CardinalityLimit => "cardinality_limit",
        /// Another node owns the event's shard; the rejection names it
        /// (`shard`, `owner`, `epoch`). Send the event there.
        NotOwner => "not_owner",
        /// The event's shard is being moved; retry shortly.
        ShardMoving => "shard_moving",
        /// A compatible-format message of a type SessionDB cannot map to an
        /// event (`docs/ingest-formats.md`).
        UnsupportedMessageType => "unsupported_message_type",
        /// A compatible-format message that carries nothing SessionDB
        /// stores (Segment `identify`, `group`, `alias`): acknowledged, not
        /// applied.
        IgnoredMessageType => "ignored_message_type",
    }
}

impl RejectCode {
    /// Whether sending the same event again may succeed without changing
    /// it: the shard is elsewhere or moving. Every other reason is about
    /// the event itself (or its project) and repeats.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RejectCode::NotOwner | RejectCode::ShardMoving)
    }
}

codes! {
    /// Why the node refused a whole request: `ErrorResponse::error`
    /// (`docs/api.md`). The HTTP status says the class; the code says
    /// which failure, and stays stable across versions.
    ErrorCode {
        /// No credential, or one the node does not know (401).
        Unauthorized => "unauthorized",
        /// A valid credential of the wrong class, e.g. an ingest key where
        /// the admin token is needed, or another project's key (403).
        Forbidden => "forbidden",
        /// The caller's credential already has
        /// `--requests-in-flight-per-credential-max` requests in flight
        /// (429, with `Retry-After`).
        TooManyRequests => "too_many_requests",
        /// The project's events-per-second budget is spent (429, with
        /// `Retry-After`); nothing of the batch was applied.
        RateLimited => "rate_limited",
        /// No room in the ingest queues in time (503, with `Retry-After`);
        /// nothing of the batch was applied.
        Overloaded => "overloaded",
        /// The log cannot write or sync (503); nothing was acknowledged.
        StorageUnavailable => "storage_unavailable",
        /// `/v1/ready`: the node's log failed (I/O error, full disk); it
        /// refuses ingest until restarted (503).
        StorageFailed => "storage_failed",
        /// The node is stopping (503).
        ShuttingDown => "shutting_down",
        /// The node cannot answer the query now (503); retry.
        Unavailable => "unavailable",
        /// The body is not the expected JSON (400).
        MalformedJson => "malformed_json",
        /// A binary batch whose framing is wrong (400).
        MalformedBinary => "malformed_binary",
        /// A body that is neither valid JSON nor a known format (400).
        MalformedBody => "malformed_body",
        /// The body is over `BODY_BYTES_MAX` (413).
        BodyTooLarge => "body_too_large",
        /// A compressed body that inflates past `BODY_BYTES_MAX` (413): the
        /// limit counts the decompressed bytes.
        DecompressedBodyTooLarge => "decompressed_body_too_large",
        /// A `Content-Encoding` other than `gzip`, `deflate` or `identity`
        /// (415).
        UnsupportedContentEncoding => "unsupported_content_encoding",
        /// A body whose `Content-Encoding` says gzip or deflate but whose
        /// bytes are not a valid stream of it (400).
        MalformedCompressedBody => "malformed_compressed_body",
        /// The batch holds more than `BATCH_EVENTS_MAX` events (413).
        BatchTooLarge => "batch_too_large",
        /// A path parameter cannot be read (400).
        InvalidPath => "invalid_path",
        /// A query parameter cannot be read (400).
        InvalidQuery => "invalid_query",
        /// No such route (404).
        NotFound => "not_found",
        /// The project does not exist (404).
        UnknownProject => "unknown_project",
        /// A project of that name exists already (409).
        ProjectExists => "project_exists",
        /// The project name is not 1–64 bytes of a-z, 0-9, `_` and `-` (400).
        InvalidProjectName => "invalid_project_name",
        /// A setting is out of its range (400).
        InvalidSettings => "invalid_settings",
        /// `bucket_ms` and `hll_precision` are fixed at creation (400).
        ImmutableSetting => "immutable_setting",
        /// The node holds `PROJECTS_MAX` projects already (400).
        TooManyProjects => "too_many_projects",
        /// The cluster did not agree to the project change (503).
        ProjectRefused => "project_refused",
        /// The experiment has no decision yet (404).
        UnknownExperiment => "unknown_experiment",
        /// `from` or `to` is not a multiple of the project's `bucket_ms`
        /// (400).
        UnalignedRange => "unaligned_range",
        /// `from` is not before `to` (400).
        InvalidRange => "invalid_range",
        /// The range spans more buckets than a query may (400).
        RangeTooLong => "range_too_long",
        /// The breakdown is not one of the project's
        /// `breakdown_attributes` (400).
        UnknownBreakdown => "unknown_breakdown",
        /// The baseline is not a variation of the experiment (400).
        UnknownBaseline => "unknown_baseline",
        /// More conversion keys than a query may ask (400).
        TooManyKeys => "too_many_keys",
        /// A time series interval that is not a multiple of `bucket_ms`
        /// (400).
        InvalidInterval => "invalid_interval",
        /// A time series with more points than a query may answer (400).
        TooManyPoints => "too_many_points",
        /// The query would read more than `--query-cost-max` cell-buckets
        /// (422).
        QueryTooExpensive => "query_too_expensive",
        /// A rotation's `grace_ms` is out of range (400).
        InvalidGrace => "invalid_grace",
        /// The node runs on the wall clock; the test clock hooks need
        /// `--manual-clock` (400).
        ClockNotManual => "clock_not_manual",
        /// A checkpoint could not be written (500).
        CheckpointFailed => "checkpoint_failed",
        /// Test hook: an injected actor panic was not recorded in time
        /// (503).
        FailureNotRecorded => "failure_not_recorded",
        /// The node asked is not the placement leader (307, naming it).
        NotLeader => "not_leader",
        /// The placement leader is not reachable from the node asked (503).
        LeaderUnreachable => "leader_unreachable",
        /// No placement leader now, e.g. during an election (503).
        PlacementUnavailable => "placement_unavailable",
        /// The leader answered something the node asked cannot read (502).
        UnexpectedPlacementAnswer => "unexpected_placement_answer",
        /// The membership cannot change now (503).
        MembershipUnavailable => "membership_unavailable",
        /// A joining node's address cannot be used (400).
        InvalidAddress => "invalid_address",
        /// Another cluster change is under way (409).
        ConcurrentChange => "concurrent_change",
        /// The node has no shard map yet (503).
        ShardMapUnavailable => "shard_map_unavailable",
        /// No such shard (404).
        UnknownShard => "unknown_shard",
        /// The move cannot start: the target owns the shard, is not a
        /// member, or the shard is moving (409).
        MoveRefused => "move_refused",
        /// A step of the move failed; it was aborted and the old owner
        /// keeps the shard (500).
        MoveFailed => "move_failed",
        /// The move stands, but the old owner kept a stale copy (500).
        DropFailed => "drop_failed",
        /// The node named is not a member (404).
        NotAMember => "not_a_member",
        /// The only member cannot be drained: nobody takes its shards (409).
        NoOtherMember => "no_other_member",
        /// The node still owns shards: drain it first (409).
        StillOwnsShards => "still_owns_shards",
        /// Handing a removed node's aggregates over failed (500).
        RemoveFailed => "remove_failed",
        /// A drain could not move the node's shards: it does not answer
        /// (502).
        NodeUnreachable => "node_unreachable",
        /// A joining node's data directory belongs to another cluster
        /// (409).
        ClusterMismatch => "cluster_mismatch",
        /// A joining node uses the id of a member the cluster knows with
        /// another data directory (409).
        IncarnationMismatch => "incarnation_mismatch",
        /// Internal: this node does not own the shard asked for (409).
        NotOwner => "not_owner",
        /// Internal: a shard state that cannot be decoded (400).
        MalformedShardState => "malformed_shard_state",
        /// Internal: a placement command that cannot be decoded (400).
        MalformedCommand => "malformed_command",
        /// Internal: a Raft message that cannot be decoded (400).
        MalformedRaftRequest => "malformed_raft_request",
        /// Internal: a move step arrived before the move began (409).
        MoveNotBegun => "move_not_begun",
        /// Internal: the aggregates were handed over already (409).
        StoresHandedOver => "stores_handed_over",
        /// Internal: two stores overlap (409).
        StoresOverlap => "stores_overlap",
        /// Internal: a store would be counted twice (409).
        StoresCountedTwice => "stores_counted_twice",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_travels_as_its_string_and_back() {
        for code in RejectCode::KNOWN {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(&serde_json::from_str::<RejectCode>(&json).unwrap(), code);
            assert!(!code.is_unknown());
        }
        for code in ErrorCode::KNOWN {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(&serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn wire_strings_are_distinct_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for code in RejectCode::KNOWN {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(code
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::KNOWN {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(code
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }

    #[test]
    fn an_unknown_code_is_kept_not_refused() {
        let code: RejectCode = serde_json::from_str("\"too_purple\"").unwrap();
        assert!(code.is_unknown());
        assert_eq!(code.as_str(), "too_purple");
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"too_purple\"");
        assert_eq!(
            ErrorCode::from("unknown_project"),
            ErrorCode::UnknownProject
        );
        assert_eq!(ErrorCode::UnknownProject, "unknown_project");
        assert!(ErrorCode::from("brand_new").is_unknown());
    }
}
