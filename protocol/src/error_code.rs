//! Kafka's protocol error codes, kept apart from Ferry's decode errors.
//!
//! [`ErrorCode`] is a newtype over the `i16` on the wire, not an enum, so a
//! code Ferry has never heard of (sent by a newer peer, or stored in a
//! response it forwards) survives a decode and re-encode unchanged. The
//! codes Kafka defines are associated constants with Kafka's names.
//!
//! Numbers, names and the retriable flag follow Kafka's protocol guide
//! (the "Error Codes" table) and its `Errors` enum as of Kafka 4.1, which
//! defines codes -1 to 133. A code is retriable when Kafka's exception for
//! it is a `RetriableException`: the client may send the same request again
//! and expect it to succeed.
//! Changing one of these numbers breaks every client; names can change.

use std::fmt;

/// A Kafka error code as carried in responses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct ErrorCode(pub i16);

macro_rules! error_codes {
    ($( $(#[$doc:meta])* ($name:ident, $code:literal, $retriable:literal) ),* $(,)?) => {
        impl ErrorCode {
            $(
                $(#[$doc])*
                pub const $name: ErrorCode = ErrorCode($code);
            )*

            /// Every code Kafka defines, with its name and retriable flag,
            /// in increasing order of code.
            pub const KNOWN: &'static [(ErrorCode, &'static str, bool)] = &[
                $( (ErrorCode($code), stringify!($name), $retriable), )*
            ];

            /// Kafka's name for this code (`"CORRUPT_MESSAGE"`), or
            /// `"UNKNOWN_ERROR_CODE"` for a code Kafka does not define.
            pub const fn name(self) -> &'static str {
                match self.0 {
                    $( $code => stringify!($name), )*
                    _ => "UNKNOWN_ERROR_CODE",
                }
            }

            /// Whether a client may retry the request that got this code
            /// and expect it to succeed. Unknown codes are not retriable,
            /// as Kafka's clients treat them.
            pub const fn is_retriable(self) -> bool {
                match self.0 {
                    $( $code => $retriable, )*
                    _ => false,
                }
            }

            /// Whether Kafka defines this code.
            // The patterns come from the table; written as a range they
            // would repeat its bounds by hand.
            #[allow(clippy::manual_range_patterns)]
            pub const fn is_known(self) -> bool {
                matches!(self.0, $( $code )|*)
            }
        }
    };
}

error_codes! {
    /// The server hit an unexpected error while handling the request.
    (UNKNOWN_SERVER_ERROR, -1, false),
    /// No error.
    (NONE, 0, false),
    /// The requested offset is outside the range the server holds.
    (OFFSET_OUT_OF_RANGE, 1, false),
    /// A record failed its CRC check, exceeds the valid size, or is otherwise
    /// corrupt.
    (CORRUPT_MESSAGE, 2, true),
    /// This server does not host the topic-partition.
    (UNKNOWN_TOPIC_OR_PARTITION, 3, true),
    /// The requested fetch size is invalid.
    (INVALID_FETCH_SIZE, 4, false),
    /// The partition has no leader: an election is under way.
    (LEADER_NOT_AVAILABLE, 5, true),
    /// This broker is not the leader (or not a replica) of the partition.
    (NOT_LEADER_OR_FOLLOWER, 6, true),
    /// The request timed out.
    (REQUEST_TIMED_OUT, 7, true),
    /// The broker is not available.
    (BROKER_NOT_AVAILABLE, 8, false),
    /// The replica is not available for the partition.
    (REPLICA_NOT_AVAILABLE, 9, true),
    /// A message is larger than the server accepts.
    (MESSAGE_TOO_LARGE, 10, false),
    /// The controller moved to another broker.
    (STALE_CONTROLLER_EPOCH, 11, false),
    /// The offset commit metadata is too large.
    (OFFSET_METADATA_TOO_LARGE, 12, false),
    /// The server disconnected before answering.
    (NETWORK_EXCEPTION, 13, true),
    /// The coordinator is still loading.
    (COORDINATOR_LOAD_IN_PROGRESS, 14, true),
    /// The coordinator is not available.
    (COORDINATOR_NOT_AVAILABLE, 15, true),
    /// This broker is not the coordinator.
    (NOT_COORDINATOR, 16, true),
    /// The topic name is invalid, or the topic may not be written to.
    (INVALID_TOPIC_EXCEPTION, 17, false),
    /// A batch is larger than the configured segment size.
    (RECORD_LIST_TOO_LARGE, 18, false),
    /// Fewer in-sync replicas than required.
    (NOT_ENOUGH_REPLICAS, 19, true),
    /// Written, but to fewer in-sync replicas than required.
    (NOT_ENOUGH_REPLICAS_AFTER_APPEND, 20, true),
    /// The produce `acks` value is invalid.
    (INVALID_REQUIRED_ACKS, 21, false),
    /// The group generation id is not valid.
    (ILLEGAL_GENERATION, 22, false),
    /// The member's protocols do not match the group's.
    (INCONSISTENT_GROUP_PROTOCOL, 23, false),
    /// The group id is invalid.
    (INVALID_GROUP_ID, 24, false),
    /// The coordinator does not know this member.
    (UNKNOWN_MEMBER_ID, 25, false),
    /// The session timeout is outside the broker's allowed range.
    (INVALID_SESSION_TIMEOUT, 26, false),
    /// The group is rebalancing; the member must rejoin.
    (REBALANCE_IN_PROGRESS, 27, false),
    /// The committed offset data size is not valid.
    (INVALID_COMMIT_OFFSET_SIZE, 28, false),
    /// Not authorized for the topic.
    (TOPIC_AUTHORIZATION_FAILED, 29, false),
    /// Not authorized for the group.
    (GROUP_AUTHORIZATION_FAILED, 30, false),
    /// Not authorized for the cluster.
    (CLUSTER_AUTHORIZATION_FAILED, 31, false),
    /// A timestamp is outside the accepted range.
    (INVALID_TIMESTAMP, 32, false),
    /// The SASL mechanism is not supported.
    (UNSUPPORTED_SASL_MECHANISM, 33, false),
    /// The request is not valid in the current SASL state.
    (ILLEGAL_SASL_STATE, 34, false),
    /// The API version is not supported.
    (UNSUPPORTED_VERSION, 35, false),
    /// A topic with this name already exists.
    (TOPIC_ALREADY_EXISTS, 36, false),
    /// The partition count is invalid.
    (INVALID_PARTITIONS, 37, false),
    /// The replication factor is invalid.
    (INVALID_REPLICATION_FACTOR, 38, false),
    /// The replica assignment is invalid.
    (INVALID_REPLICA_ASSIGNMENT, 39, false),
    /// A configuration is invalid.
    (INVALID_CONFIG, 40, false),
    /// This is not the controller.
    (NOT_CONTROLLER, 41, true),
    /// The request is malformed or was sent to an incompatible broker.
    (INVALID_REQUEST, 42, false),
    /// The topic's message format cannot carry what the request needs.
    (UNSUPPORTED_FOR_MESSAGE_FORMAT, 43, false),
    /// The request breaks a configured policy.
    (POLICY_VIOLATION, 44, false),
    /// A producer sequence number is out of order.
    (OUT_OF_ORDER_SEQUENCE_NUMBER, 45, false),
    /// A producer sequence number is a duplicate.
    (DUPLICATE_SEQUENCE_NUMBER, 46, false),
    /// The producer epoch is old.
    (INVALID_PRODUCER_EPOCH, 47, false),
    /// The transactional operation is invalid in the current state.
    (INVALID_TXN_STATE, 48, false),
    /// The producer id is not assigned to this transactional id.
    (INVALID_PRODUCER_ID_MAPPING, 49, false),
    /// The transaction timeout exceeds the broker's maximum.
    (INVALID_TRANSACTION_TIMEOUT, 50, false),
    /// Another operation on the same transaction is in progress.
    /// (Retriable in Kafka 3.4 and later; older guides list it as not.)
    (CONCURRENT_TRANSACTIONS, 51, true),
    /// The transaction coordinator sending a marker is no longer current.
    (TRANSACTION_COORDINATOR_FENCED, 52, false),
    /// Not authorized for the transactional id.
    (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, 53, false),
    /// Security features are disabled.
    (SECURITY_DISABLED, 54, false),
    /// The broker did not try this operation of a batched request.
    (OPERATION_NOT_ATTEMPTED, 55, false),
    /// A disk error on the broker.
    (KAFKA_STORAGE_ERROR, 56, true),
    /// The log directory is not in the broker's configuration.
    (LOG_DIR_NOT_FOUND, 57, false),
    /// SASL authentication failed.
    (SASL_AUTHENTICATION_FAILED, 58, false),
    /// The broker has no state for this producer id.
    (UNKNOWN_PRODUCER_ID, 59, false),
    /// A partition reassignment is in progress.
    (REASSIGNMENT_IN_PROGRESS, 60, false),
    /// Delegation tokens are disabled.
    (DELEGATION_TOKEN_AUTH_DISABLED, 61, false),
    /// The delegation token was not found.
    (DELEGATION_TOKEN_NOT_FOUND, 62, false),
    /// The principal is not the token's owner or renewer.
    (DELEGATION_TOKEN_OWNER_MISMATCH, 63, false),
    /// Delegation token requests are not allowed on this channel.
    (DELEGATION_TOKEN_REQUEST_NOT_ALLOWED, 64, false),
    /// Delegation token authorization failed.
    (DELEGATION_TOKEN_AUTHORIZATION_FAILED, 65, false),
    /// The delegation token has expired.
    (DELEGATION_TOKEN_EXPIRED, 66, false),
    /// The principal type is not supported.
    (INVALID_PRINCIPAL_TYPE, 67, false),
    /// The group is not empty.
    (NON_EMPTY_GROUP, 68, false),
    /// The group id does not exist.
    (GROUP_ID_NOT_FOUND, 69, false),
    /// The fetch session id was not found.
    (FETCH_SESSION_ID_NOT_FOUND, 70, true),
    /// The fetch session epoch is invalid.
    (INVALID_FETCH_SESSION_EPOCH, 71, true),
    /// The leader has no listener matching the one the request came in on.
    (LISTENER_NOT_FOUND, 72, true),
    /// Topic deletion is disabled.
    (TOPIC_DELETION_DISABLED, 73, false),
    /// The request's leader epoch is older than the broker's.
    (FENCED_LEADER_EPOCH, 74, true),
    /// The request's leader epoch is newer than the broker's.
    (UNKNOWN_LEADER_EPOCH, 75, true),
    /// The compression type is not supported for this request.
    (UNSUPPORTED_COMPRESSION_TYPE, 76, false),
    /// The broker epoch has changed.
    (STALE_BROKER_EPOCH, 77, false),
    /// The leader's high watermark has not caught up after an election.
    (OFFSET_NOT_AVAILABLE, 78, true),
    /// The member needs a member id before joining.
    (MEMBER_ID_REQUIRED, 79, false),
    /// The preferred leader is not available.
    (PREFERRED_LEADER_NOT_AVAILABLE, 80, true),
    /// The group has reached its maximum size.
    (GROUP_MAX_SIZE_REACHED, 81, false),
    /// Another member registered with the same `group.instance.id`.
    (FENCED_INSTANCE_ID, 82, false),
    /// No eligible leaders are available.
    (ELIGIBLE_LEADERS_NOT_AVAILABLE, 83, true),
    /// No leader election is needed.
    (ELECTION_NOT_NEEDED, 84, true),
    /// No partition reassignment is in progress.
    (NO_REASSIGNMENT_IN_PROGRESS, 85, false),
    /// Offsets of a subscribed topic cannot be deleted.
    (GROUP_SUBSCRIBED_TO_TOPIC, 86, false),
    /// A record failed the broker's validation and is rejected.
    (INVALID_RECORD, 87, false),
    /// Unstable offsets must be cleared first.
    (UNSTABLE_OFFSET_COMMIT, 88, true),
    /// The throttling quota has been exceeded.
    (THROTTLING_QUOTA_EXCEEDED, 89, true),
    /// A newer producer with the same transactional id fenced this one.
    (PRODUCER_FENCED, 90, false),
    /// The resource does not exist.
    (RESOURCE_NOT_FOUND, 91, false),
    /// The same resource was named twice.
    (DUPLICATE_RESOURCE, 92, false),
    /// The credential does not meet the acceptance criteria.
    (UNACCEPTABLE_CREDENTIAL, 93, false),
    /// The sender or receiver is not one of the expected voters.
    (INCONSISTENT_VOTER_SET, 94, false),
    /// The update version is invalid.
    (INVALID_UPDATE_VERSION, 95, false),
    /// Finalized features could not be updated.
    (FEATURE_UPDATE_FAILED, 96, false),
    /// The forwarded principal could not be deserialized.
    (PRINCIPAL_DESERIALIZATION_FAILURE, 97, false),
    /// The snapshot was not found.
    (SNAPSHOT_NOT_FOUND, 98, false),
    /// The snapshot position is out of range.
    (POSITION_OUT_OF_RANGE, 99, false),
    /// This server does not host the topic id.
    (UNKNOWN_TOPIC_ID, 100, true),
    /// The broker id is already registered.
    (DUPLICATE_BROKER_REGISTRATION, 101, false),
    /// The broker id is not registered.
    (BROKER_ID_NOT_REGISTERED, 102, false),
    /// The log's topic id does not match the request's.
    (INCONSISTENT_TOPIC_ID, 103, true),
    /// The cluster id does not match the server's.
    (INCONSISTENT_CLUSTER_ID, 104, false),
    /// The transactional id was not found.
    (TRANSACTIONAL_ID_NOT_FOUND, 105, false),
    /// The fetch session used topic ids inconsistently.
    (FETCH_SESSION_TOPIC_ID_ERROR, 106, true),
    /// The new ISR holds an ineligible replica.
    (INELIGIBLE_REPLICA, 107, false),
    /// The partition was updated, but the leader has changed.
    (NEW_LEADER_ELECTED, 108, false),
    /// The offset has moved to tiered storage.
    (OFFSET_MOVED_TO_TIERED_STORAGE, 109, false),
    /// The member epoch is fenced; the member must rejoin.
    (FENCED_MEMBER_EPOCH, 110, false),
    /// The instance id is still used by another member.
    (UNRELEASED_INSTANCE_ID, 111, false),
    /// The assignor is not supported by the group.
    (UNSUPPORTED_ASSIGNOR, 112, false),
    /// The member epoch is stale.
    (STALE_MEMBER_EPOCH, 113, false),
    /// The request went to an endpoint of the wrong type.
    (MISMATCHED_ENDPOINT_TYPE, 114, false),
    /// The endpoint type is not supported yet.
    (UNSUPPORTED_ENDPOINT_TYPE, 115, false),
    /// The controller id is not known.
    (UNKNOWN_CONTROLLER_ID, 116, false),
    /// The telemetry subscription id is unknown or outdated.
    (UNKNOWN_SUBSCRIPTION_ID, 117, false),
    /// The telemetry push is larger than the broker accepts.
    (TELEMETRY_TOO_LARGE, 118, false),
    /// The controller considers the broker registration invalid.
    (INVALID_REGISTRATION, 119, false),
    /// The transaction hit an error; the client can abort it and go on.
    (TRANSACTION_ABORTABLE, 120, false),
    /// The record state is invalid; the acknowledgement failed.
    (INVALID_RECORD_STATE, 121, false),
    /// The share session was not found.
    (SHARE_SESSION_NOT_FOUND, 122, true),
    /// The share session epoch is invalid.
    (INVALID_SHARE_SESSION_EPOCH, 123, true),
    /// The share-group state epoch did not match.
    (FENCED_STATE_EPOCH, 124, false),
    /// The voter key does not match the replica's.
    (INVALID_VOTER_KEY, 125, false),
    /// The voter is already in the voter set.
    (DUPLICATE_VOTER, 126, false),
    /// The voter is not in the voter set.
    (VOTER_NOT_FOUND, 127, false),
    /// The regular expression is invalid.
    (INVALID_REGULAR_EXPRESSION, 128, false),
    /// The client's metadata is stale; it should rebootstrap.
    (REBOOTSTRAP_REQUIRED, 129, false),
    /// The streams topology is invalid.
    (STREAMS_INVALID_TOPOLOGY, 130, false),
    /// The streams topology epoch is invalid.
    (STREAMS_INVALID_TOPOLOGY_EPOCH, 131, false),
    /// The streams topology epoch is outdated.
    (STREAMS_TOPOLOGY_FENCED, 132, false),
    /// The limit of share sessions has been reached.
    (SHARE_SESSION_LIMIT_REACHED, 133, true),
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub const fn code(self) -> i16 {
        self.0
    }

    /// Whether this is [`ErrorCode::NONE`].
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Whether this is anything but [`ErrorCode::NONE`].
    pub const fn is_err(self) -> bool {
        self.0 != 0
    }
}

impl From<i16> for ErrorCode {
    fn from(code: i16) -> Self {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for i16 {
    fn from(code: ErrorCode) -> Self {
        code.0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            write!(f, "{} ({})", self.name(), self.0)
        } else {
            write!(f, "unknown error code {}", self.0)
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            write!(f, "ErrorCode::{}({})", self.name(), self.0)
        } else {
            write!(f, "ErrorCode({})", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn known_codes_are_dense_sorted_and_unique() {
        let codes: Vec<i16> = ErrorCode::KNOWN.iter().map(|(c, _, _)| c.0).collect();
        let expected: Vec<i16> = (-1..=133).collect();
        assert_eq!(codes, expected, "codes -1..=133, no gaps, in order");
        let names: HashSet<&str> = ErrorCode::KNOWN.iter().map(|(_, n, _)| *n).collect();
        assert_eq!(names.len(), ErrorCode::KNOWN.len(), "names are unique");
        for (code, name, retriable) in ErrorCode::KNOWN {
            assert_eq!(code.name(), *name);
            assert_eq!(code.is_retriable(), *retriable, "{name}");
            assert!(code.is_known());
        }
    }

    #[test]
    fn facts_match_kafka() {
        // Spot checks against Kafka's protocol guide.
        assert_eq!(ErrorCode::CORRUPT_MESSAGE.code(), 2);
        assert!(ErrorCode::CORRUPT_MESSAGE.is_retriable());
        assert_eq!(ErrorCode::NOT_LEADER_OR_FOLLOWER.code(), 6);
        assert!(ErrorCode::NOT_LEADER_OR_FOLLOWER.is_retriable());
        assert_eq!(ErrorCode::MESSAGE_TOO_LARGE.code(), 10);
        assert!(!ErrorCode::MESSAGE_TOO_LARGE.is_retriable());
        assert_eq!(ErrorCode::UNSUPPORTED_VERSION.code(), 35);
        assert_eq!(ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT.code(), 43);
        assert_eq!(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER.code(), 45);
        assert_eq!(ErrorCode::DUPLICATE_SEQUENCE_NUMBER.code(), 46);
        assert_eq!(ErrorCode::KAFKA_STORAGE_ERROR.code(), 56);
        assert!(ErrorCode::KAFKA_STORAGE_ERROR.is_retriable());
        assert_eq!(ErrorCode::UNSUPPORTED_COMPRESSION_TYPE.code(), 76);
        assert_eq!(ErrorCode::INVALID_RECORD.code(), 87);
        assert!(!ErrorCode::INVALID_RECORD.is_retriable());
        assert_eq!(ErrorCode::PRODUCER_FENCED.code(), 90);
        assert_eq!(ErrorCode::UNKNOWN_TOPIC_ID.code(), 100);
        assert!(!ErrorCode::UNKNOWN_SERVER_ERROR.is_retriable());
        assert!(!ErrorCode::NONE.is_retriable());
    }

    #[test]
    fn unknown_codes_round_trip() {
        for raw in i16::MIN..=i16::MAX {
            let code = ErrorCode::from(raw);
            assert_eq!(i16::from(code), raw);
            let known = (-1..=133).contains(&raw);
            assert_eq!(code.is_known(), known, "{raw}");
            if !known {
                assert_eq!(code.name(), "UNKNOWN_ERROR_CODE");
                assert!(!code.is_retriable());
            }
        }
    }

    #[test]
    fn display_and_debug() {
        assert_eq!(ErrorCode::INVALID_RECORD.to_string(), "INVALID_RECORD (87)");
        assert_eq!(ErrorCode(999).to_string(), "unknown error code 999");
        assert_eq!(
            format!("{:?}", ErrorCode::CORRUPT_MESSAGE),
            "ErrorCode::CORRUPT_MESSAGE(2)"
        );
        assert_eq!(format!("{:?}", ErrorCode(-7)), "ErrorCode(-7)");
        assert!(ErrorCode::NONE.is_ok());
        assert!(ErrorCode::INVALID_RECORD.is_err());
        assert_eq!(ErrorCode::default(), ErrorCode::NONE);
    }
}
