//! Generated protobuf code against byte fixtures written by hand from the
//! field numbers in docs/PROTOCOL.md: a wrong field number, type or enum
//! value fails here.

use aft::proto::aft::{
    AftCommitRequest, AftQuery, AftResponse, CommitRequest, KeyValuePair, MetadataRequest,
    TransactionList, TransactionRecord, TransactionStatus, TransactionTag,
};
use aft::proto::anna::{
    key_address_response::KeyAddress, AnnaError, KeyAddressRequest, KeyAddressResponse, KeyRequest,
    KeyResponse, KeyTuple, LatticeType, LwwValue, RequestType, SetValue,
};
use prost::Message;

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, bytes: &[u8]) {
    assert_eq!(msg.encode_to_vec(), bytes, "encoding of {msg:?}");
    assert_eq!(&M::decode(bytes).unwrap(), msg, "decoding of {bytes:x?}");
}

#[test]
fn enum_values() {
    assert_eq!(RequestType::RtUnspecified as i32, 0);
    assert_eq!(RequestType::Get as i32, 1);
    assert_eq!(RequestType::Put as i32, 2);
    let lattices = [
        (LatticeType::None, 0),
        (LatticeType::Lww, 1),
        (LatticeType::Set, 2),
        (LatticeType::SingleCausal, 3),
        (LatticeType::MultiCausal, 4),
        (LatticeType::OrderedSet, 5),
        (LatticeType::Priority, 6),
    ];
    for (l, n) in lattices {
        assert_eq!(l as i32, n, "{l:?}");
    }
    let errors = [
        (AnnaError::NoError, 0),
        (AnnaError::KeyDne, 1),
        (AnnaError::WrongThread, 2),
        (AnnaError::Timeout, 3),
        (AnnaError::Lattice, 4),
        (AnnaError::NoServers, 5),
    ];
    for (e, n) in errors {
        assert_eq!(e as i32, n, "{e:?}");
    }
    assert_eq!(TransactionStatus::Running as i32, 0);
    assert_eq!(TransactionStatus::Committed as i32, 1);
    assert_eq!(TransactionStatus::Aborted as i32, 2);
}

fn tuple_a_lww() -> KeyTuple {
    KeyTuple {
        key: "a".into(),
        lattice_type: LatticeType::Lww as i32,
        ..Default::default()
    }
}

#[test]
fn key_tuple() {
    // field 1 (key, len-delimited) "a"; field 2 (lattice_type, varint) 1
    roundtrip(&tuple_a_lww(), &[0x0a, 0x01, b'a', 0x10, 0x01]);
    let full = KeyTuple {
        key: "k".into(),
        lattice_type: LatticeType::Set as i32,
        error: AnnaError::KeyDne as i32,
        payload: vec![0xff],
        address_cache_size: 300,
        invalidate: true,
    };
    roundtrip(
        &full,
        &[
            0x0a, 0x01, b'k', 0x10, 0x02, 0x18, 0x01, 0x22, 0x01, 0xff, 0x28, 0xac, 0x02, 0x30,
            0x01,
        ],
    );
}

#[test]
fn key_request_and_response() {
    let req = KeyRequest {
        r#type: RequestType::Get as i32,
        tuples: vec![tuple_a_lww()],
        response_address: "r".into(),
        request_id: "i".into(),
    };
    roundtrip(
        &req,
        &[
            0x08, 0x01, 0x12, 0x05, 0x0a, 0x01, b'a', 0x10, 0x01, 0x1a, 0x01, b'r', 0x22, 0x01,
            b'i',
        ],
    );
    let resp = KeyResponse {
        r#type: RequestType::Put as i32,
        tuples: vec![tuple_a_lww()],
        response_id: "i".into(),
        error: AnnaError::Timeout as i32,
    };
    roundtrip(
        &resp,
        &[
            0x08, 0x02, 0x12, 0x05, 0x0a, 0x01, b'a', 0x10, 0x01, 0x1a, 0x01, b'i', 0x20, 0x03,
        ],
    );
}

#[test]
fn key_address_messages() {
    let req = KeyAddressRequest {
        response_address: "r".into(),
        keys: vec!["a".into(), "b".into()],
        request_id: "i".into(),
    };
    roundtrip(
        &req,
        &[
            0x0a, 0x01, b'r', 0x12, 0x01, b'a', 0x12, 0x01, b'b', 0x1a, 0x01, b'i',
        ],
    );
    let resp = KeyAddressResponse {
        addresses: vec![KeyAddress {
            key: "a".into(),
            ips: vec!["x".into()],
        }],
        error: AnnaError::NoServers as i32,
        response_id: "i".into(),
    };
    roundtrip(
        &resp,
        &[
            0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'x', 0x10, 0x05, 0x1a, 0x01, b'i',
        ],
    );
}

#[test]
fn lattice_values() {
    roundtrip(
        &LwwValue {
            timestamp: 1,
            value: b"x".to_vec(),
        },
        &[0x08, 0x01, 0x12, 0x01, b'x'],
    );
    roundtrip(
        &SetValue {
            values: vec![b"p".to_vec(), vec![]],
        },
        &[0x0a, 0x01, b'p', 0x0a, 0x00],
    );
}

#[test]
fn transaction_endpoint_messages() {
    roundtrip(
        &TransactionTag {
            id: "t".into(),
            status: TransactionStatus::Committed as i32,
            address: "a".into(),
        },
        &[0x0a, 0x01, b't', 0x10, 0x01, 0x1a, 0x01, b'a'],
    );
    roundtrip(
        &MetadataRequest {
            tid: "t".into(),
            response_address: "r".into(),
            address: "a".into(),
        },
        &[0x0a, 0x01, b't', 0x12, 0x01, b'r', 0x1a, 0x01, b'a'],
    );
    roundtrip(
        &CommitRequest {
            tid: "t".into(),
            response_address: "r".into(),
            addresses: vec!["x".into(), "y".into()],
        },
        &[
            0x0a, 0x01, b't', 0x12, 0x01, b'r', 0x1a, 0x01, b'x', 0x1a, 0x01, b'y',
        ],
    );
}

#[test]
fn aft_records_and_queries() {
    let record = TransactionRecord {
        id: "t".into(),
        timestamp: 5,
        status: TransactionStatus::Aborted as i32,
        replica_id: "n".into(),
        write_set: vec!["k".into()],
        read_set: [("k".to_string(), "v".to_string())].into_iter().collect(),
    };
    let record_bytes = [
        0x0a, 0x01, b't', 0x10, 0x05, 0x18, 0x02, 0x22, 0x01, b'n', 0x2a, 0x01, b'k', 0x32, 0x06,
        0x0a, 0x01, b'k', 0x12, 0x01, b'v',
    ];
    roundtrip(&record, &record_bytes);
    let mut list_bytes = vec![0x0a, record_bytes.len() as u8];
    list_bytes.extend_from_slice(&record_bytes);
    roundtrip(
        &TransactionList {
            records: vec![record.clone()],
        },
        &list_bytes,
    );
    let mut commit_bytes = list_bytes.clone();
    commit_bytes.extend_from_slice(&[0x12, 0x01, b'r']);
    roundtrip(
        &AftCommitRequest {
            record: Some(record),
            response_address: "r".into(),
        },
        &commit_bytes,
    );
    roundtrip(
        &KeyValuePair {
            key: "k".into(),
            value: b"v".to_vec(),
            cowritten_keys: vec!["c".into()],
            tid: "t".into(),
            timestamp: 2,
        },
        &[
            0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x1a, 0x01, b'c', 0x22, 0x01, b't', 0x28, 0x02,
        ],
    );
    roundtrip(
        &AftQuery {
            key: "k".into(),
            tid: "t".into(),
            response_address: "r".into(),
        },
        &[0x0a, 0x01, b'k', 0x12, 0x01, b't', 0x1a, 0x01, b'r'],
    );
    roundtrip(
        &AftResponse {
            key: "k".into(),
            found: true,
            pointer: "p".into(),
            data: b"d".to_vec(),
        },
        &[
            0x0a, 0x01, b'k', 0x10, 0x01, 0x1a, 0x01, b'p', 0x22, 0x01, b'd',
        ],
    );
}

#[test]
fn peer_envelope_carries_its_version() {
    use aft::proto::peer::{peer_envelope::Body, FetchTransaction, PeerEnvelope, PROTOCOL_VERSION};
    let env = PeerEnvelope {
        protocol_version: PROTOCOL_VERSION,
        correlation_id: 7,
        sender: "s".into(),
        body: Some(Body::FetchTransaction(FetchTransaction {
            tid: "t".into(),
            ..Default::default()
        })),
    };
    roundtrip(
        &env,
        &[
            0x08, 0x01, 0x10, 0x07, 0x1a, 0x01, b's', 0x6a, 0x03, 0x0a, 0x01, b't',
        ],
    );
}
