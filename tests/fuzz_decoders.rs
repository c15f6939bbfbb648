//! Property-based fuzzing of every decoder that takes bytes from outside:
//! IPC request frames (all six endpoints), peer frames (plain and sealed),
//! records read back from storage, and LWW payloads. None may panic, and
//! each must either decode or refuse with an error.
//!
//! `cargo fuzz` needs a nightly toolchain, which this project's machines do
//! not have; proptest drives the same decoders with random and mutated
//! inputs. The run is bounded: `AFT_FUZZ_CASES` cases per property
//! (default 100,000: about half a minute in all in a debug build); set it
//! higher for a longer run, e.g. `AFT_FUZZ_CASES=1000000 cargo test --release --test fuzz_decoders`.

use aft::ipc::request::{decode, Endpoint, TRANSACTION_ID_KEY};
use aft::peer::PeerKey;
use aft::proto::anna::{KeyRequest, KeyTuple};
use aft::proto::peer::PeerEnvelope;
use aft::storage::lww_timestamp;
use aft::txn::{decode_commit_record, decode_decision};
use proptest::prelude::*;
use prost::Message;

fn valid_get() -> Vec<u8> {
    KeyRequest {
        tuples: vec![
            KeyTuple {
                key: "k".into(),
                ..Default::default()
            },
            KeyTuple {
                key: TRANSACTION_ID_KEY.into(),
                payload: b"t".to_vec(),
                ..Default::default()
            },
        ],
        response_address: "ipc:///requests/get_0".into(),
        request_id: "1".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn cases() -> u32 {
    std::env::var("AFT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn ipc_requests_never_panic(endpoint in 0..6usize, bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(Endpoint::ALL[endpoint], &bytes);
    }

    #[test]
    fn mutated_valid_requests_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut frame = valid_get();
        for (at, byte) in flips {
            let i = at.index(frame.len());
            frame[i] ^= byte;
        }
        let len = cut.index(frame.len() + 1);
        frame.truncate(len);
        for endpoint in Endpoint::ALL {
            let _ = decode(endpoint, &frame);
        }
    }

    #[test]
    fn peer_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = PeerEnvelope::decode(bytes.as_slice());
        let key = PeerKey::from_hex(&"ab".repeat(32)).unwrap();
        prop_assert!(key.open(&bytes).is_none() || bytes.first() == Some(&0xA5));
    }

    #[test]
    fn storage_records_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_commit_record(b"aft/c/x", &bytes);
        let _ = decode_decision(b"aft/c/x", &bytes);
        let _ = lww_timestamp(&bytes);
    }
}

#[test]
fn absurd_lengths_do_not_allocate_unboundedly() {
    // A length prefix claiming 2^31 bytes with nothing behind it.
    let frame = [0x12, 0xff, 0xff, 0xff, 0xff, 0x07];
    assert!(KeyRequest::decode(&frame[..]).is_err());
    assert!(PeerEnvelope::decode(&frame[..]).is_err());
    for endpoint in Endpoint::ALL {
        let _ = decode(endpoint, &frame);
    }
}
