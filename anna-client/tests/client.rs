//! The client against the protocol-faithful test server: one test per
//! Anna behaviour the client must handle.

use std::time::{Duration, Instant};

use anna_client::proto::{self, AnnaError, LatticeType};
use anna_client::test_server::{TestServer, TestServerConfig};
use anna_client::{AnnaClient, ClientConfig, Error, LwwValue, Value};
use prost::Message;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn setup(kvs_threads: usize) -> Result<(TestServer, AnnaClient), Box<dyn std::error::Error>> {
    let server = TestServer::start(TestServerConfig::with_kvs_threads(kvs_threads))?;
    let client = AnnaClient::connect(server.client_config()).await?;
    Ok((server, client))
}

/// What every test checks at the end: the client never sent a multi-key
/// address request or a malformed response address, and used one stable
/// pair of response addresses.
fn assert_well_behaved(server: &TestServer, clients: usize) {
    let stats = server.stats();
    assert_eq!(stats.multi_key_address_requests, 0, "{stats:?}");
    assert_eq!(stats.malformed_response_addresses, 0, "{stats:?}");
    assert!(stats.response_addresses.len() <= 2 * clients, "{stats:?}");
}

/// A key owned by KVS thread `thread`.
fn key_on(server: &TestServer, thread: usize, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| server.owners(k) == [thread])
        .unwrap_or_else(|| panic!("no key on thread {thread}"))
}

#[tokio::test]
async fn put_get_delete_round_trip() -> TestResult {
    let (server, client) = setup(1).await?;
    assert_eq!(client.get("missing").await?, None);
    client.put("k", b"value").await?;
    assert_eq!(client.get("k").await?, Some(b"value".to_vec()));
    client.put("k", b"newer").await?;
    assert_eq!(client.get("k").await?, Some(b"newer".to_vec()));
    client.delete("k").await?;
    assert_eq!(client.get("k").await?, None);
    client.put("k", b"revived").await?;
    assert_eq!(client.get("k").await?, Some(b"revived".to_vec()));
    // Deleting a missing key is fine.
    client.delete("never-written").await?;
    assert_eq!(client.get("never-written").await?, None);
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn empty_value_is_not_missing() -> TestResult {
    let (server, client) = setup(1).await?;
    client.put("empty", b"").await?;
    assert_eq!(client.get("empty").await?, Some(Vec::new()));
    // The same through raw LWW: Anna reports an empty LWW value as KEY_DNE.
    client
        .put_lww("raw-empty", LwwValue::new(1, Vec::new()))
        .await?;
    assert!(server.stored("raw-empty").is_some());
    assert_eq!(client.get_lww("raw-empty").await?, None);
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn raw_lww_merge_rules() -> TestResult {
    let (server, client) = setup(1).await?;
    client
        .put_lww("c", LwwValue::new(10, b"ten".to_vec()))
        .await?;
    client
        .put_lww("c", LwwValue::new(5, b"five".to_vec()))
        .await?;
    assert_eq!(
        client.get_lww("c").await?,
        Some(LwwValue::new(10, b"ten".to_vec()))
    );
    // Equal timestamps: the later arrival wins.
    client
        .put_lww("c", LwwValue::new(10, b"TEN".to_vec()))
        .await?;
    assert_eq!(
        client.get_lww("c").await?,
        Some(LwwValue::new(10, b"TEN".to_vec()))
    );
    // A raw value is not in the envelope.
    assert!(matches!(client.get("c").await, Err(Error::Envelope { .. })));
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn sets_merge_by_union() -> TestResult {
    let (server, client) = setup(1).await?;
    assert_eq!(client.get_set("s").await?, None);
    client
        .add_to_set("s", [b"a".to_vec(), b"b".to_vec()])
        .await?;
    client
        .add_to_set("s", [b"b".to_vec(), b"c".to_vec()])
        .await?;
    let set = client.get_set("s").await?.unwrap_or_default();
    assert_eq!(
        set.into_iter().collect::<Vec<_>>(),
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn lattice_mismatch_put_is_a_failure() -> TestResult {
    let (server, client) = setup(1).await?;
    client.put("lww", b"x").await?;
    let err = client.add_to_set("lww", [b"e".to_vec()]).await;
    match err {
        Err(Error::LatticeMismatch {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "lww");
            assert_eq!(expected, LatticeType::Set);
            assert_eq!(actual, LatticeType::None);
        }
        other => panic!("expected a lattice mismatch, got {other:?}"),
    }
    // Anna dropped the put.
    assert_eq!(client.get("lww").await?, Some(b"x".to_vec()));
    // Reading a SET as LWW is a mismatch too.
    client.add_to_set("set", [b"e".to_vec()]).await?;
    assert!(matches!(
        client.get_lww("set").await,
        Err(Error::LatticeMismatch { .. })
    ));
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn multi_key_requests_across_threads() -> TestResult {
    let (server, client) = setup(3).await?;
    let entries: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("key-{i}"), format!("value-{i}").into_bytes()))
        .collect();
    client.put_many(&entries).await?;
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).rev().collect();
    let values = client.get_many(&keys).await?;
    for (k, v) in keys.iter().zip(&values) {
        let i = k.trim_start_matches("key-");
        assert_eq!(v.as_deref(), Some(format!("value-{i}").as_bytes()));
    }
    let stats = server.stats();
    // One address request per key (later calls hit the cache), one
    // KeyRequest per KVS thread per call.
    assert_eq!(stats.address_requests, 40);
    assert!(stats.key_requests <= 6, "{stats:?}");
    // Missing and duplicate keys in one call.
    let values = client.get_many(&["key-1", "nope", "key-1"]).await?;
    assert_eq!(values[0].as_deref(), Some(&b"value-1"[..]));
    assert_eq!(values[1], None);
    assert_eq!(values[2], values[0]);
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn duplicate_keys_in_one_put() -> TestResult {
    let (server, client) = setup(1).await?;
    client
        .put_many(&[("d", &b"first"[..]), ("d", &b"second"[..])])
        .await?;
    assert_eq!(client.get("d").await?, Some(b"second".to_vec()));
    let mixed = client
        .put_values(vec![
            ("m".into(), Value::set([b"a".to_vec()])),
            ("m".into(), Value::Lww(LwwValue::new(1, b"x".to_vec()))),
        ])
        .await;
    assert!(matches!(mixed, Err(Error::InvalidRequest { .. })));
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn wrong_thread_reresolves_and_resends() -> TestResult {
    let (server, client) = setup(2).await?;
    let k1 = key_on(&server, 0, "a");
    let k2 = key_on(&server, 0, "b");
    client.put_many(&[(&k1, b"1"), (&k2, b"2")]).await?;
    assert_eq!(
        client.cached_addresses(&k2),
        Some(vec![server.kvs_endpoints()[0].clone()])
    );
    // k2 moves to thread 1: the client's cache is stale. One request goes
    // to thread 0, which answers k1 at once and k2 WRONG_THREAD in a second
    // response 25 ms later.
    server.move_key(&k2, 1);
    let started = Instant::now();
    client.put_many(&[(&k1, b"1b"), (&k2, b"2b")]).await?;
    assert!(started.elapsed() >= Duration::from_millis(25));
    assert_eq!(server.stats().wrong_thread_answers, 1);
    assert_eq!(
        client.cached_addresses(&k2),
        Some(vec![server.kvs_endpoints()[1].clone()])
    );
    // The WRONG_THREAD put was not applied by thread 0 but resent to 1.
    assert_eq!(
        client.get_many(&[&k1, &k2]).await?,
        [Some(b"1b".to_vec()), Some(b"2b".to_vec())]
    );

    // Injected WRONG_THREAD on an owned key: retried and applied once.
    server.inject_wrong_thread(&k1, 2);
    client.put(&k1, b"1c").await?;
    assert_eq!(client.get(&k1).await?, Some(b"1c".to_vec()));
    assert_eq!(server.stats().wrong_thread_answers, 3);
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn persistent_wrong_thread_gives_up() -> TestResult {
    let server = TestServer::start_default()?;
    let mut config = server.client_config();
    config.max_attempts = 3;
    let client = AnnaClient::connect(config).await?;
    server.inject_wrong_thread("w", 100);
    match client.get("w").await {
        Err(Error::RetriesExhausted {
            key,
            last,
            attempts,
        }) => {
            assert_eq!(key, "w");
            assert_eq!(last, AnnaError::WrongThread);
            assert_eq!(attempts, 3);
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn invalidate_drops_cached_addresses() -> TestResult {
    let (server, client) = setup(1).await?;
    client.put("i", b"v").await?;
    assert!(client.cached_addresses("i").is_some());
    let before = server.stats().address_requests;
    server.inject_invalidate("i", 1);
    // The answer is still good; only the cache entry goes.
    assert_eq!(client.get("i").await?, Some(b"v".to_vec()));
    assert_eq!(client.cached_addresses("i"), None);
    client.get("i").await?;
    assert_eq!(server.stats().address_requests, before + 1);
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn replica_count_mismatch_invalidates() -> TestResult {
    let mut config = TestServerConfig::with_kvs_threads(2);
    config.replication = 2;
    let server = TestServer::start(config)?;
    let client = AnnaClient::connect(server.client_config()).await?;
    client.put("r", b"v").await?;
    assert_eq!(client.cached_addresses("r").map(|a| a.len()), Some(2));
    // Replication drops to 1: a tuple with address_cache_size 2 comes back
    // with `invalidate`.
    server.move_key("r", 0);
    assert_eq!(client.get("r").await?, Some(b"v".to_vec()));
    client.get("r").await?;
    assert_eq!(
        client.cached_addresses("r"),
        Some(vec![server.kvs_endpoints()[0].clone()])
    );
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn key_dne_means_absent() -> TestResult {
    let (server, client) = setup(1).await?;
    client.put("there", b"v").await?;
    server.inject_key_error("there", AnnaError::KeyDne, 1);
    assert_eq!(client.get("there").await?, None);
    assert_eq!(client.get("there").await?, Some(b"v".to_vec()));
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn no_servers_is_retried_later() -> TestResult {
    let (server, client) = setup(1).await?;
    server.inject_no_servers(3);
    let started = Instant::now();
    client.put("n", b"v").await?;
    assert_eq!(server.stats().address_requests, 4);
    // Backoff between the rounds: 2 + 4 + 8 ms at most, half at least.
    assert!(started.elapsed() >= Duration::from_millis(7));
    // NO_SERVERS on a tuple is retried too.
    server.inject_key_error("n", AnnaError::NoServers, 2);
    assert_eq!(client.get("n").await?, Some(b"v".to_vec()));
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn no_servers_forever_gives_up() -> TestResult {
    let server = TestServer::start_default()?;
    let mut config = server.client_config();
    config.max_attempts = 4;
    let client = AnnaClient::connect(config).await?;
    server.inject_no_servers(1000);
    match client.get("x").await {
        Err(Error::NoServers { key, attempts }) => {
            assert_eq!(key, "x");
            assert_eq!(attempts, 4);
        }
        other => panic!("expected NoServers, got {other:?}"),
    }
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn dropped_responses_are_retried() -> TestResult {
    let (server, client) = setup(1).await?;
    server.drop_address_responses(1);
    client.put("d", b"v").await?;
    server.drop_kvs_responses(1);
    assert_eq!(client.get("d").await?, Some(b"v".to_vec()));
    // A dropped put ack: the put was applied, the retry is idempotent.
    server.drop_kvs_responses(1);
    client.put("d", b"w").await?;
    assert_eq!(client.get("d").await?, Some(b"w".to_vec()));
    assert_eq!(server.stats().dropped_responses, 3);
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn late_responses_are_ignored_and_time_out() -> TestResult {
    let server = TestServer::start_default()?;
    let mut config = server.client_config();
    config.request_timeout = Duration::from_millis(50);
    config.operation_timeout = Duration::from_millis(400);
    let client = AnnaClient::connect(config).await?;
    client.put("late", b"v").await?;
    // Every answer comes after its attempt timed out: the late answers
    // (to ids nobody waits for any more) are dropped, the call times out.
    server.set_kvs_delay(Duration::from_millis(120));
    let started = Instant::now();
    match client.get("late").await {
        Err(Error::Timeout { key, .. }) => assert_eq!(key, "late"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(800));
    // A delay within the attempt timeout is fine, and the late answers of
    // the failed call do not confuse later calls.
    server.set_kvs_delay(Duration::from_millis(10));
    client.put("late", b"w").await?;
    assert_eq!(client.get("late").await?, Some(b"w".to_vec()));
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn an_outage_applies_nothing_and_ends() -> TestResult {
    let server = TestServer::start_default()?;
    let mut config = server.client_config();
    config.request_timeout = Duration::from_millis(50);
    config.operation_timeout = Duration::from_millis(300);
    let client = AnnaClient::connect(config).await?;
    client.put("o", b"before").await?;
    server.set_outage(true);
    assert!(client.put("o", b"during").await.is_err());
    assert!(client.get("o").await.is_err());
    server.set_outage(false);
    assert_eq!(
        client.get("o").await?,
        Some(b"before".to_vec()),
        "nothing applied during the outage"
    );
    Ok(())
}

#[tokio::test]
async fn one_request_answered_in_several_responses() -> TestResult {
    let (server, client) = setup(1).await?;
    client
        .put_many(&[("x", b"1"), ("y", b"2"), ("z", b"3")])
        .await?;
    let requests = server.stats().key_requests;
    server.inject_key_delay("y", Duration::from_millis(30), 1);
    server.inject_key_delay("z", Duration::from_millis(60), 1);
    let values = client.get_many(&["x", "y", "z"]).await?;
    assert_eq!(
        values,
        [
            Some(b"1".to_vec()),
            Some(b"2".to_vec()),
            Some(b"3".to_vec())
        ]
    );
    // One request, three responses with its id.
    assert_eq!(server.stats().key_requests, requests + 1);
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn responses_to_unknown_ids_are_ignored() -> TestResult {
    let (server, client) = setup(1).await?;
    client.put("u", b"v").await?;
    // A stray response pushed at the client's KVS response socket.
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH)?;
    push.set_linger(0)?;
    push.connect(client.kvs_response_address())?;
    let stray = proto::KeyResponse {
        response_id: "not-ours-1".into(),
        tuples: vec![proto::KeyTuple {
            key: "u".into(),
            error: AnnaError::KeyDne as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    push.send(stray.encode_to_vec(), 0)?;
    push.send(&b"not even protobuf \xff\xff"[..], 0)?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(client.get("u").await?, Some(b"v".to_vec()));
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn routing_unreachable_times_out() -> TestResult {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = ClientConfig::new(&format!("127.0.0.1:{port}"));
    config.request_timeout = Duration::from_millis(50);
    config.operation_timeout = Duration::from_millis(300);
    let client = AnnaClient::connect(config).await?;
    // The response IP was detected from the route to the routing node.
    assert!(client
        .kvs_response_address()
        .starts_with("tcp://127.0.0.1:"));
    let started = Instant::now();
    assert!(matches!(client.get("k").await, Err(Error::Timeout { .. })));
    assert!(started.elapsed() < Duration::from_millis(700));
    Ok(())
}

#[tokio::test]
async fn concurrent_callers_share_one_client() -> TestResult {
    let (server, client) = setup(2).await?;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let key = format!("c-{t}-{i}");
                client.put(&key, key.as_bytes()).await?;
                assert_eq!(client.get(&key).await?, Some(key.clone().into_bytes()));
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    assert_well_behaved(&server, 1);
    assert_eq!(server.stats().response_addresses.len(), 2);
    Ok(())
}

#[tokio::test]
async fn configurable_base_ports() -> TestResult {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = TestServerConfig::default();
    config.routing_base_port = Some(port);
    let server = TestServer::start(config)?;
    assert_eq!(server.routing_host_port(), format!("127.0.0.1:{port}"));
    let mut config = ClientConfig::new(&server.routing_host_port());
    config.response_ip = Some([127, 0, 0, 1].into());
    let client = AnnaClient::connect(config).await?;
    client.put("p", b"v").await?;
    assert_eq!(client.get("p").await?, Some(b"v".to_vec()));
    Ok(())
}

#[tokio::test]
async fn values_written_by_others_are_readable_raw() -> TestResult {
    let (server, client) = setup(1).await?;
    // What Cloudburst stores: an LWWValue around its own serialization.
    server.insert(
        "funcs:f",
        Value::Lww(LwwValue::new(7, b"\x08\x01code".to_vec())),
    );
    assert_eq!(
        client.get_lww("funcs:f").await?,
        Some(LwwValue::new(7, b"\x08\x01code".to_vec()))
    );
    assert!(matches!(
        client.get("funcs:f").await,
        Err(Error::Envelope { .. })
    ));
    assert_well_behaved(&server, 1);
    Ok(())
}

#[tokio::test]
async fn ten_thousand_keys_in_one_call() -> TestResult {
    let (server, client) = setup(1).await?;
    let entries: Vec<(String, Vec<u8>)> = (0..10_000)
        .map(|i| (format!("bulk/{i:05}"), vec![1u8; 8]))
        .collect();
    let started = Instant::now();
    client.put_many(&entries).await?;
    let put = started.elapsed();
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let started = Instant::now();
    let values = client.get_many(&keys).await?;
    let get = started.elapsed();
    assert!(values.iter().all(|v| v.as_deref() == Some(&[1u8; 8][..])));
    eprintln!("10k put (with address lookups): {put:?}; 10k get (cached): {get:?}");
    // Nothing was dropped on the way and retried.
    let stats = server.stats();
    assert_eq!(stats.address_requests, 10_000);
    assert_eq!(stats.key_requests, 2);
    assert_well_behaved(&server, 1);
    Ok(())
}
