//! Conversions between peer-protocol messages and engine types.

use bytes::Bytes;
use prost::Message;

use crate::meta::{CommitMeta, Version};
use crate::proto::peer::{
    self as proto, peer_envelope::Body, BufferedKey, BufferedValue, CommittedTransaction,
    KeyVersion, NodeIncarnation, PeerEnvelope, ShippedValue, TransactionState, PROTOCOL_VERSION,
};
use crate::txn::{ClientCall, ClientEnd, ClientReply, UpstreamState};

/// A peer envelope around `body`.
pub fn envelope(correlation_id: u64, sender: &str, body: Body) -> Vec<u8> {
    PeerEnvelope {
        protocol_version: PROTOCOL_VERSION,
        correlation_id,
        sender: sender.to_string(),
        body: Some(body),
    }
    .encode_to_vec()
}

/// A key at a version, as a message.
pub fn key_version(key: &str, version: &Version) -> KeyVersion {
    KeyVersion {
        key: key.to_string(),
        writer_tid: version.tid.to_string(),
        writer_timestamp: version.timestamp,
    }
}

/// A key at a version, from a message.
pub fn version_of(kv: &KeyVersion) -> (String, Version) {
    (
        kv.key.clone(),
        Version::new(kv.writer_timestamp, kv.writer_tid.as_str()),
    )
}

/// An engine transaction state as a message.
pub fn state_to_proto(tid: &str, state: &UpstreamState) -> TransactionState {
    TransactionState {
        tid: tid.to_string(),
        reads: state.reads.iter().map(|(k, v)| key_version(k, v)).collect(),
        lower_bounds: state.lower.iter().map(|(k, v)| key_version(k, v)).collect(),
        buffered: state
            .buffered
            .iter()
            .map(|(key, node)| BufferedKey {
                key: key.clone(),
                node: node.clone(),
            })
            .collect(),
        buffered_values: state
            .buffered_values
            .iter()
            .map(|(key, payload)| ShippedValue {
                key: key.clone(),
                payload: payload.to_vec(),
            })
            .collect(),
        upstream_nodes: state.upstream_nodes.clone(),
        start_timestamp: state.start_ts,
        failure: state.doomed.clone().unwrap_or_default(),
        visited: incarnations_to_proto(&state.visited),
        age_micros: u64::try_from(state.age.as_micros()).unwrap_or(u64::MAX),
    }
}

/// (node, incarnation) pairs as messages.
pub fn incarnations_to_proto(visited: &[(String, u64)]) -> Vec<NodeIncarnation> {
    visited
        .iter()
        .map(|(node, incarnation)| NodeIncarnation {
            node: node.clone(),
            incarnation: *incarnation,
        })
        .collect()
}

/// Messages as (node, incarnation) pairs.
pub fn incarnations_from_proto(visited: &[NodeIncarnation]) -> Vec<(String, u64)> {
    visited
        .iter()
        .map(|v| (v.node.clone(), v.incarnation))
        .collect()
}

/// A transaction state message as engine state.
pub fn state_from_proto(state: &TransactionState) -> UpstreamState {
    UpstreamState {
        reads: state.reads.iter().map(version_of).collect(),
        lower: state.lower_bounds.iter().map(version_of).collect(),
        buffered: state
            .buffered
            .iter()
            .map(|b| (b.key.clone(), b.node.clone()))
            .collect(),
        buffered_values: state
            .buffered_values
            .iter()
            .map(|v| (v.key.clone(), Bytes::from(v.payload.clone())))
            .collect(),
        upstream_nodes: state.upstream_nodes.clone(),
        start_ts: state.start_timestamp,
        doomed: (!state.failure.is_empty()).then(|| state.failure.clone()),
        visited: incarnations_from_proto(&state.visited),
        age: std::time::Duration::from_micros(state.age_micros),
    }
}

/// A commit as a message.
pub fn commit_to_proto(meta: &CommitMeta) -> CommittedTransaction {
    CommittedTransaction {
        tid: meta.tid.to_string(),
        timestamp: meta.timestamp,
        write_set: meta.write_set.to_vec(),
        base_keys: meta.base_keys.clone(),
    }
}

/// A commit message as engine metadata (`None` if it is malformed).
pub fn commit_from_proto(commit: &CommittedTransaction) -> Option<CommitMeta> {
    CommitMeta::checked(
        &commit.tid,
        commit.timestamp,
        commit.write_set.clone(),
        commit.base_keys.clone(),
    )
}

/// A client's call of transaction `tid` as a message.
pub fn call_to_proto(tid: &str, call: &ClientCall) -> proto::ClientCall {
    let mut message = proto::ClientCall {
        tid: tid.to_string(),
        ..Default::default()
    };
    match call {
        ClientCall::Read(keys) => message.read = Some(proto::ClientRead { keys: keys.clone() }),
        ClientCall::Write(writes) => {
            message.write = Some(proto::ClientWrite {
                values: writes
                    .iter()
                    .map(|(key, value)| ShippedValue {
                        key: key.clone(),
                        payload: value.to_vec(),
                    })
                    .collect(),
            })
        }
        ClientCall::Commit => message.commit = true,
        ClientCall::Abort => message.abort = true,
    }
    message
}

/// A call message as the engine's call (`None` unless exactly one call is set).
pub fn call_from_proto(message: proto::ClientCall) -> Option<ClientCall> {
    match (message.read, message.write, message.commit, message.abort) {
        (Some(read), None, false, false) => Some(ClientCall::Read(read.keys)),
        (None, Some(write), false, false) => Some(ClientCall::Write(
            write
                .values
                .into_iter()
                .map(|v| (v.key, Bytes::from(v.payload)))
                .collect(),
        )),
        (None, None, true, false) => Some(ClientCall::Commit),
        (None, None, false, true) => Some(ClientCall::Abort),
        _ => None,
    }
}

/// A call's answer as a message.
pub fn reply_to_proto(reply: &ClientReply) -> proto::ClientReply {
    match reply {
        ClientReply::Values(values) => proto::ClientReply {
            values: values
                .iter()
                .map(|v| BufferedValue {
                    found: v.is_some(),
                    payload: v.as_ref().map(|b| b.to_vec()).unwrap_or_default(),
                })
                .collect(),
            ..Default::default()
        },
        ClientReply::Written => proto::ClientReply {
            written: true,
            ..Default::default()
        },
        ClientReply::Ended(end) => proto::ClientReply {
            ended: true,
            end: match end {
                ClientEnd::Committed => proto::ClientEnd::Committed,
                ClientEnd::Aborted => proto::ClientEnd::Aborted,
                ClientEnd::Unknown => proto::ClientEnd::Unknown,
            } as i32,
            ..Default::default()
        },
    }
}

/// A reply message as the engine's answer to `call` (`None` if it does not
/// answer that kind of call).
pub fn reply_from_proto(call: &ClientCall, reply: proto::ClientReply) -> Option<ClientReply> {
    match call {
        ClientCall::Read(keys) if reply.values.len() == keys.len() => Some(ClientReply::Values(
            reply
                .values
                .into_iter()
                .map(|v| v.found.then(|| Bytes::from(v.payload)))
                .collect(),
        )),
        ClientCall::Write(_) if reply.written => Some(ClientReply::Written),
        ClientCall::Commit | ClientCall::Abort if reply.ended => {
            Some(ClientReply::Ended(match reply.end() {
                proto::ClientEnd::Committed => ClientEnd::Committed,
                proto::ClientEnd::Aborted => ClientEnd::Aborted,
                proto::ClientEnd::Unknown => ClientEnd::Unknown,
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_calls_and_replies_round_trip_and_malformed_calls_are_refused() {
        let calls = [
            ClientCall::Read(vec!["a".into(), "b".into()]),
            ClientCall::Write(vec![("a".into(), Bytes::from_static(b"v"))]),
            ClientCall::Commit,
            ClientCall::Abort,
        ];
        for call in calls {
            assert_eq!(call_from_proto(call_to_proto("t", &call)), Some(call));
        }
        let both = proto::ClientCall {
            commit: true,
            abort: true,
            ..Default::default()
        };
        assert_eq!(call_from_proto(both), None);
        assert_eq!(call_from_proto(proto::ClientCall::default()), None);
        let read = ClientCall::Read(vec!["a".into(), "b".into()]);
        let values = ClientReply::Values(vec![Some(Bytes::from_static(b"x")), None]);
        assert_eq!(
            reply_from_proto(&read, reply_to_proto(&values)),
            Some(values)
        );
        let ended = ClientReply::Ended(ClientEnd::Committed);
        assert_eq!(
            reply_from_proto(&ClientCall::Commit, reply_to_proto(&ended)),
            Some(ended)
        );
        // A reply that does not answer the call is refused.
        assert_eq!(
            reply_from_proto(&read, reply_to_proto(&ClientReply::Written)),
            None
        );
    }

    #[test]
    fn state_round_trips() {
        let state = UpstreamState {
            reads: vec![
                ("a".into(), Version::new(5, "t1")),
                ("b".into(), Version::base()),
            ],
            lower: vec![("c".into(), Version::new(5, "t1"))],
            buffered: vec![("d".into(), "10.0.0.1".into())],
            buffered_values: vec![("d".into(), Bytes::from_static(b"value of d"))],
            upstream_nodes: vec!["10.0.0.1".into()],
            start_ts: 42,
            doomed: Some("a read failed".into()),
            visited: vec![("10.0.0.1".into(), 7)],
            age: std::time::Duration::from_millis(1_234),
        };
        let back = state_from_proto(&state_to_proto("t", &state));
        assert_eq!(back.start_ts, 42);
        assert_eq!(back.age, state.age);
        assert_eq!(back.doomed.as_deref(), Some("a read failed"));
        assert_eq!(back.visited, state.visited);
        assert_eq!(back.reads, state.reads);
        assert_eq!(back.lower, state.lower);
        assert_eq!(back.buffered, state.buffered);
        assert_eq!(back.buffered_values, state.buffered_values);
        assert_eq!(back.upstream_nodes, state.upstream_nodes);
        assert!(back.reads[1].1.is_base());
    }

    #[test]
    fn malformed_commits_are_refused() {
        assert!(commit_from_proto(&CommittedTransaction::default()).is_none());
        let ok = CommittedTransaction {
            write_set: vec![],
            ..CommittedTransaction {
                tid: "t".into(),
                timestamp: 3,
                write_set: vec![],
                base_keys: vec![],
            }
        };
        assert!(commit_from_proto(&ok).is_some(), "an empty commit is valid");
        let ok = CommittedTransaction {
            tid: "t".into(),
            timestamp: 3,
            write_set: vec!["k".into()],
            base_keys: vec![],
        };
        assert_eq!(commit_from_proto(&ok).map(|m| m.timestamp), Some(3));
    }
}
