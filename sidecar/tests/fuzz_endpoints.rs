//! Hostile input against a running sidecar: random and mutated frames on
//! every IPC endpoint and on the peer port. It must answer what it can,
//! drop the rest, stay up, and keep serving well-behaved clients.

use std::path::Path;
use std::time::Duration;

use aft::client::{lww_payload, IpcClient};
use aft::ipc::request::{Endpoint, TRANSACTION_ID_KEY};
use aft::proto::aft::TransactionStatus;
use aft::proto::anna::{KeyRequest, KeyTuple, LatticeType};
use aft_testkit::cluster::LocalCluster;
use prost::Message;
use rand::{RngExt, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_aft-sidecar");
const FRAMES_PER_ENDPOINT: usize = 400;

fn mutate(rng: &mut rand::rngs::StdRng, frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    for _ in 0..rng.random_range(1..6) {
        if out.is_empty() {
            break;
        }
        let i = rng.random_range(0..out.len());
        out[i] ^= rng.random::<u8>();
    }
    if rng.random_bool(0.3) {
        let len = rng.random_range(0..=out.len());
        out.truncate(len);
    }
    out
}

#[test]
fn random_and_mutated_frames_do_not_stop_the_sidecar() {
    let mut cluster = LocalCluster::start(Path::new(BIN), 1, &[]);
    let node = &cluster.nodes[0];
    let attacker = IpcClient::connect(&node.ipc, 7, Duration::from_secs(5)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xA17);
    let valid_put = KeyRequest {
        tuples: vec![
            KeyTuple {
                key: "k".into(),
                lattice_type: LatticeType::Lww as i32,
                payload: lww_payload(1, b"v"),
                ..Default::default()
            },
            KeyTuple {
                key: TRANSACTION_ID_KEY.into(),
                payload: b"t-1".to_vec(),
                ..Default::default()
            },
        ],
        response_address: attacker.reply_address(Endpoint::Put),
        request_id: "r".into(),
        ..Default::default()
    }
    .encode_to_vec();
    for endpoint in Endpoint::ALL {
        for i in 0..FRAMES_PER_ENDPOINT {
            let frame = if i % 2 == 0 {
                (0..rng.random_range(0..300))
                    .map(|_| rng.random::<u8>())
                    .collect()
            } else {
                mutate(&mut rng, &valid_put)
            };
            attacker.send_raw(endpoint, &frame).unwrap();
        }
    }
    // The peer port too: well-framed garbage on one connection, and raw
    // garbage (whatever length its first bytes claim) on fresh ones.
    use std::io::Write;
    let peer = ("127.0.0.1", cluster.peer_port);
    let mut framed = std::net::TcpStream::connect(peer).unwrap();
    for _ in 0..FRAMES_PER_ENDPOINT {
        let frame: Vec<u8> = (0..rng.random_range(0..300))
            .map(|_| rng.random::<u8>())
            .collect();
        let length = u32::try_from(frame.len()).unwrap().to_be_bytes();
        // The node may close the connection on a frame it cannot use.
        let _ = framed.write_all(&length);
        let _ = framed.write_all(&frame);
    }
    for _ in 0..20 {
        let raw: Vec<u8> = (0..rng.random_range(1..300))
            .map(|_| rng.random::<u8>())
            .collect();
        if let Ok(mut stream) = std::net::TcpStream::connect(peer) {
            let _ = stream.write_all(&raw);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        cluster.nodes[0].sidecar.is_running(),
        "sidecar died: {}",
        cluster.nodes[0].sidecar.stderr()
    );

    let c = IpcClient::connect(&cluster.nodes[0].ipc, 0, Duration::from_secs(5)).unwrap();
    let tid = c.start().unwrap().id;
    c.put(Some(&tid), &[("after-fuzz", lww_payload(1, b"ok"))])
        .unwrap();
    assert_eq!(
        c.commit(&tid, &[]).unwrap().status,
        TransactionStatus::Committed
    );
    assert_eq!(
        c.get(None, &["after-fuzz"]).unwrap(),
        vec![Some(lww_payload(1, b"ok"))]
    );
}
