//! The storage conformance suite: every backend must pass every case.
//!
//! Each case takes a fresh namespace prefix so cases can share one server.

use aft::proto::anna::LwwValue;
use aft::storage::{Storage, StorageError, DEFAULT_MAX_VALUE_BYTES};
use prost::Message;

/// Declares, in a module named after `$backend`, one test per case named,
/// each on a fresh backend from the caller's `async fn $backend() ->
/// (guard, Arc<dyn Storage>)` (the guard keeps its server alive).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident, $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_guard, s) = super::$backend().await;
                    $crate::conformance::$case(s.as_ref(), b"ns/").await;
                }
            )*
        }
    };
}

/// [`conformance_tests!`] with every case of the suite (for backends with
/// conditional writes; a backend without them names its cases).
#[macro_export]
macro_rules! full_conformance_tests {
    ($backend:ident) => {
        $crate::conformance_tests!(
            $backend,
            roundtrip_overwrite_delete,
            empty_value_is_not_missing,
            binary_keys_and_values,
            values_up_to_the_limit,
            batch_of_ten_thousand,
            prefix_scan_of_one_hundred_thousand,
            prefix_scan_escapes_globs,
            lww_merge_keeps_newest,
            put_if_absent_writes_once,
            put_many_if_absent_is_guarded,
            guarded_batch_with_merges,
            large_guarded_batch,
        );
    };
}

/// Every case, by name, for backends that run them all in one test.
pub async fn run_all(s: &dyn Storage) {
    run_all_under(s, b"").await;
}

/// The whole suite with every namespace under `root` (DynamoDB scans a
/// prefix with two `/` by queries, a shorter one by a table scan: a root
/// like `aft/t/` makes the suite take the query path).
pub async fn run_all_under(s: &dyn Storage, root: &[u8]) {
    run_all_with(s, root, 100_000).await;
}

/// [`run_all_under`] with the prefix scan over `scan_keys` keys (for stores
/// that take one request per key, where 100,000 cost minutes).
pub async fn run_all_with(s: &dyn Storage, root: &[u8], scan_keys: usize) {
    let ns = |name: &str| [root, name.as_bytes()].concat();
    // Each case's time is printed (`--nocapture`): slow backends show where.
    macro_rules! case {
        ($name:ident, $ns:expr) => {{
            let started = std::time::Instant::now();
            $name(s, &ns($ns)).await;
            println!(
                "{}: {} in {:?}",
                s.describe(),
                stringify!($name),
                started.elapsed()
            );
        }};
    }
    case!(roundtrip_overwrite_delete, "rt/");
    case!(empty_value_is_not_missing, "empty/");
    case!(binary_keys_and_values, "bin/");
    case!(values_up_to_the_limit, "big/");
    case!(batch_of_ten_thousand, "batch/");
    {
        let started = std::time::Instant::now();
        prefix_scan_of(s, &ns("scan/"), scan_keys).await;
        println!(
            "{}: prefix_scan_of {scan_keys} keys in {:?}",
            s.describe(),
            started.elapsed()
        );
    }
    case!(prefix_scan_escapes_globs, "glob/");
    case!(lww_merge_keeps_newest, "lww/");
    case!(put_if_absent_writes_once, "nx/");
    case!(put_many_if_absent_is_guarded, "nxmany/");
    case!(guarded_batch_with_merges, "nxmerge/");
    case!(large_guarded_batch, "nxlarge/");
}

fn key(ns: &[u8], k: &str) -> Vec<u8> {
    let mut v = ns.to_vec();
    v.extend_from_slice(k.as_bytes());
    v
}

/// get/put/overwrite/delete of single keys; deleting a missing key is fine.
pub async fn roundtrip_overwrite_delete(s: &dyn Storage, ns: &[u8]) {
    let k = key(ns, "a");
    assert_eq!(s.get(&k).await.unwrap(), None);
    s.put(&k, b"one").await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(b"one".to_vec()));
    s.put(&k, b"two").await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(b"two".to_vec()));
    s.delete(&k).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), None);
    s.delete(&k).await.unwrap();
    s.delete_many(&[k.clone(), key(ns, "never")]).await.unwrap();
}

/// A 0-byte value is stored and read back as present.
pub async fn empty_value_is_not_missing(s: &dyn Storage, ns: &[u8]) {
    let k = key(ns, "e");
    s.put(&k, b"").await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(Vec::new()));
    let many = s.get_many(&[k.clone(), key(ns, "missing")]).await.unwrap();
    assert_eq!(many, vec![Some(Vec::new()), None]);
}

/// Keys and values with every byte value survive byte for byte.
pub async fn binary_keys_and_values(s: &dyn Storage, ns: &[u8]) {
    let all: Vec<u8> = (0..=255u8).collect();
    let mut k = ns.to_vec();
    k.extend_from_slice(&all);
    let mut v = all.clone();
    v.reverse();
    s.put(&k, &v).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(v.clone()));
    let scanned = s.scan_prefix(&k).await.unwrap();
    assert_eq!(scanned, vec![k.clone()]);
    let mut nul_key = ns.to_vec();
    nul_key.extend_from_slice(b"\0\xff\0");
    s.put_many(&[(nul_key.clone(), b"\0".to_vec())])
        .await
        .unwrap();
    assert_eq!(
        s.get_many(&[nul_key]).await.unwrap(),
        vec![Some(b"\0".to_vec())]
    );
}

/// Values up to the default maximum (16 MiB) are accepted; one byte more is
/// refused with a typed error, and nothing is stored.
pub async fn values_up_to_the_limit(s: &dyn Storage, ns: &[u8]) {
    // The configured limit (16 MiB), or the backend's own when lower.
    let max = s.value_limit().unwrap_or(DEFAULT_MAX_VALUE_BYTES);
    let k = key(ns, "max");
    let value: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    s.put(&k, &value).await.unwrap();
    let back = s.get(&k).await.unwrap().expect("largest value present");
    assert_eq!(back.len(), value.len());
    assert!(back == value, "largest value changed");
    s.put_many(&[(k.clone(), value.clone())]).await.unwrap();
    s.delete(&k).await.unwrap();

    let too_big = vec![7u8; max + 1];
    let k2 = key(ns, "too-big");
    match s.put(&k2, &too_big).await {
        Err(StorageError::ValueTooLarge { size, limit }) => {
            assert_eq!(size, max + 1);
            assert_eq!(limit, max);
        }
        other => panic!("oversized put gave {other:?}"),
    }
    match s.put_many(&[(k2.clone(), too_big)]).await {
        Err(StorageError::ValueTooLarge { .. }) => {}
        other => panic!("oversized put_many gave {other:?}"),
    }
    assert_eq!(s.get(&k2).await.unwrap(), None);
}

/// 10,000 keys in one batch: put, read back in order (with gaps), delete.
pub async fn batch_of_ten_thousand(s: &dyn Storage, ns: &[u8]) {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..10_000)
        .map(|i| (key(ns, &format!("k{i:05}")), format!("v{i}").into_bytes()))
        .collect();
    s.put_many(&entries).await.unwrap();
    let mut asked: Vec<Vec<u8>> = entries.iter().rev().map(|(k, _)| k.clone()).collect();
    asked.insert(5000, key(ns, "absent"));
    let got = s.get_many(&asked).await.unwrap();
    assert_eq!(got.len(), asked.len());
    for (k, v) in asked.iter().zip(&got) {
        let expected = entries
            .iter()
            .find(|(ek, _)| ek == k)
            .map(|(_, v)| v.clone());
        assert_eq!(v, &expected, "key {:?}", String::from_utf8_lossy(k));
    }
    let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).collect();
    s.delete_many(&keys).await.unwrap();
    let got = s.get_many(&keys[..100]).await.unwrap();
    assert!(got.iter().all(Option::is_none));
    assert!(s.get_many(&[]).await.unwrap().is_empty());
}

/// A prefix scan over 100,000 keys returns exactly the keys with the prefix, sorted.
pub async fn prefix_scan_of_one_hundred_thousand(s: &dyn Storage, ns: &[u8]) {
    prefix_scan_of(s, ns, 100_000).await;
}

/// `count` keys under one prefix, written in batches of 10,000, beside keys
/// that only look alike: the scan returns exactly them, sorted; then
/// `delete_many` removes them all and the scan finds none.
pub async fn prefix_scan_of(s: &dyn Storage, ns: &[u8], count: usize) {
    let inside: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
        .map(|i| (key(ns, &format!("in/{i:06}")), Vec::new()))
        .collect();
    for chunk in inside.chunks(10_000) {
        s.put_many(chunk).await.unwrap();
    }
    let outside = vec![
        (key(ns, "in"), b"x".to_vec()),
        (key(ns, "io/1"), b"x".to_vec()),
        (key(ns, "out/1"), b"x".to_vec()),
    ];
    s.put_many(&outside).await.unwrap();
    let scanned = s.scan_prefix(&key(ns, "in/")).await.unwrap();
    assert_eq!(scanned.len(), inside.len());
    let expected: Vec<Vec<u8>> = inside.iter().map(|(k, _)| k.clone()).collect();
    assert!(scanned == expected, "scan returned other keys or order");
    assert!(s
        .scan_prefix(&key(ns, "nothing/"))
        .await
        .unwrap()
        .is_empty());
    for chunk in expected.chunks(10_000) {
        s.delete_many(chunk).await.unwrap();
    }
    assert!(s.scan_prefix(&key(ns, "in/")).await.unwrap().is_empty());
    assert_eq!(s.get(&key(ns, "in")).await.unwrap(), Some(b"x".to_vec()));
}

/// Glob characters in a prefix are matched literally.
pub async fn prefix_scan_escapes_globs(s: &dyn Storage, ns: &[u8]) {
    s.put(&key(ns, "a*[b]?\\/1"), b"x").await.unwrap();
    s.put(&key(ns, "aX[b]?\\/2"), b"x").await.unwrap();
    s.put(&key(ns, "a*b?\\/3"), b"x").await.unwrap();
    let got = s.scan_prefix(&key(ns, "a*[b]?\\/")).await.unwrap();
    assert_eq!(got, vec![key(ns, "a*[b]?\\/1")]);
}

fn lww(ts: u64, value: &[u8]) -> Vec<u8> {
    LwwValue {
        timestamp: ts,
        value: value.to_vec(),
    }
    .encode_to_vec()
}

/// `merge_lww` keeps the newest timestamp; equal or older is ignored; a
/// stored value that is not an LWWValue is replaced.
pub async fn lww_merge_keeps_newest(s: &dyn Storage, ns: &[u8]) {
    let k = key(ns, "plain");
    s.merge_lww(&k, 10, &lww(10, b"ten")).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(lww(10, b"ten")));
    s.merge_lww(&k, 5, &lww(5, b"five")).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(lww(10, b"ten")));
    s.merge_lww(&k, 10, &lww(10, b"other ten")).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(lww(10, b"ten")));
    let big_ts = 1_800_000_000_000_000u64;
    s.merge_lww(&k, big_ts, &lww(big_ts, b"new")).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(lww(big_ts, b"new")));
    s.merge_lww(&k, big_ts - 1, &lww(big_ts - 1, b"old"))
        .await
        .unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(lww(big_ts, b"new")));

    let many = [key(ns, "m1"), key(ns, "m2")];
    s.merge_lww(&many[0], 50, &lww(50, b"newer")).await.unwrap();
    s.merge_lww_many(&[
        (many[0].clone(), 40, lww(40, b"older")),
        (many[1].clone(), 40, lww(40, b"fresh")),
    ])
    .await
    .unwrap();
    assert_eq!(s.get(&many[0]).await.unwrap(), Some(lww(50, b"newer")));
    assert_eq!(s.get(&many[1]).await.unwrap(), Some(lww(40, b"fresh")));

    let junk = key(ns, "junk");
    s.put(&junk, b"\xff\xff not protobuf").await.unwrap();
    s.merge_lww(&junk, 1, &lww(1, b"x")).await.unwrap();
    assert_eq!(s.get(&junk).await.unwrap(), Some(lww(1, b"x")));

    // Out-of-order arrivals: whatever the order, the newest ends up stored.
    let hot = key(ns, "hot");
    for ts in [7u64, 40, 3, 39, 1, 20] {
        let value = lww(ts, format!("v{ts}").as_bytes());
        s.merge_lww(&hot, ts, &value).await.unwrap();
    }
    assert_eq!(s.get(&hot).await.unwrap(), Some(lww(40, b"v40")));
}

/// `put_if_absent` writes once; later calls leave the value alone.
pub async fn put_if_absent_writes_once(s: &dyn Storage, ns: &[u8]) {
    let k = key(ns, "once");
    assert!(s.put_if_absent(&k, b"first").await.unwrap());
    assert!(!s.put_if_absent(&k, b"second").await.unwrap());
    assert_eq!(s.get(&k).await.unwrap(), Some(b"first".to_vec()));
    s.delete(&k).await.unwrap();
    assert!(s.put_if_absent(&k, b"").await.unwrap());
    assert_eq!(s.get(&k).await.unwrap(), Some(Vec::new()));
}

/// `put_many_if_absent` writes the whole batch when its guard is free, and
/// (on backends with atomic batches) nothing at all when the guard exists;
/// a guard missing from the entries is a clear error.
pub async fn put_many_if_absent_is_guarded(s: &dyn Storage, ns: &[u8]) {
    let guard = key(ns, "guard");
    let (a, b) = (key(ns, "a"), key(ns, "b"));
    let batch = vec![
        (a.clone(), b"a1".to_vec()),
        (guard.clone(), b"record".to_vec()),
        (b.clone(), vec![7u8; 1000]),
    ];
    assert!(s.put_many_if_absent(&guard, &batch).await.unwrap());
    assert_eq!(s.get(&guard).await.unwrap(), Some(b"record".to_vec()));
    assert_eq!(s.get(&b).await.unwrap(), Some(vec![7u8; 1000]));

    let (c, d) = (key(ns, "c"), key(ns, "d"));
    let second = vec![
        (c.clone(), b"c".to_vec()),
        (guard.clone(), b"other".to_vec()),
    ];
    assert!(!s.put_many_if_absent(&guard, &second).await.unwrap());
    assert_eq!(s.get(&guard).await.unwrap(), Some(b"record".to_vec()));
    if s.atomic_batches() {
        assert_eq!(
            s.get(&c).await.unwrap(),
            None,
            "nothing written when the guard exists"
        );
    }
    let missing_guard = vec![(d.clone(), b"d".to_vec())];
    assert!(s.put_many_if_absent(&guard, &missing_guard).await.is_err());
    assert_eq!(s.get(&d).await.unwrap(), None);
}

/// `put_many_if_absent_and_merge` writes its entries and applies its LWW
/// merges (keeping newer stored values) only when its guard is free; when
/// the guard exists, (on backends with atomic publication) nothing at all.
pub async fn guarded_batch_with_merges(s: &dyn Storage, ns: &[u8]) {
    let lww = |ts: u64, v: &[u8]| {
        LwwValue {
            timestamp: ts,
            value: v.to_vec(),
        }
        .encode_to_vec()
    };
    let guard = key(ns, "record");
    let (data, fresh, newer) = (key(ns, "data"), key(ns, "fresh"), key(ns, "newer"));
    s.merge_lww(&newer, 50, &lww(50, b"stored-newer"))
        .await
        .unwrap();
    let entries = vec![
        (guard.clone(), b"record".to_vec()),
        (data.clone(), b"d".to_vec()),
    ];
    let merges = vec![
        (fresh.clone(), 20, lww(20, b"published")),
        (newer.clone(), 20, lww(20, b"older")),
    ];
    assert!(s
        .put_many_if_absent_and_merge(&guard, &entries, &merges)
        .await
        .unwrap());
    assert_eq!(s.get(&data).await.unwrap(), Some(b"d".to_vec()));
    assert_eq!(s.get(&fresh).await.unwrap(), Some(lww(20, b"published")));
    assert_eq!(
        s.get(&newer).await.unwrap(),
        Some(lww(50, b"stored-newer")),
        "a newer stored value is kept"
    );
    // The guard is taken: nothing more is written or merged.
    let other = key(ns, "other");
    let again = vec![
        (guard.clone(), b"second".to_vec()),
        (other.clone(), b"o".to_vec()),
    ];
    let later = vec![(fresh.clone(), 90, lww(90, b"later"))];
    assert!(!s
        .put_many_if_absent_and_merge(&guard, &again, &later)
        .await
        .unwrap());
    assert_eq!(s.get(&guard).await.unwrap(), Some(b"record".to_vec()));
    assert_eq!(s.get(&fresh).await.unwrap(), Some(lww(20, b"published")));
    if s.atomic_publication() {
        assert_eq!(s.get(&other).await.unwrap(), None);
    }
    // A guard missing from the entries is refused, whatever the merges.
    let missing = vec![(other.clone(), b"o".to_vec())];
    assert!(s
        .put_many_if_absent_and_merge(&key(ns, "absent"), &missing, &later)
        .await
        .is_err());
}

/// A guarded batch larger than any store's atomic transaction (1,000
/// entries, 1 MB): written whole when the guard is free (atomically or
/// not, as `atomic_batch_fits` says), and the guard still refuses a second
/// writer.
pub async fn large_guarded_batch(s: &dyn Storage, ns: &[u8]) {
    let guard = key(ns, "guard");
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = (0..1000)
        .map(|i| (key(ns, &format!("e{i:04}")), vec![(i % 256) as u8; 1000]))
        .collect();
    batch.push((guard.clone(), b"record".to_vec()));
    assert!(s.put_many_if_absent(&guard, &batch).await.unwrap());
    let keys: Vec<Vec<u8>> = batch.iter().map(|(k, _)| k.clone()).collect();
    let back = s.get_many(&keys).await.unwrap();
    for ((k, v), got) in batch.iter().zip(&back) {
        assert_eq!(got.as_ref(), Some(v), "{}", String::from_utf8_lossy(k));
    }
    let again = vec![(guard.clone(), b"other".to_vec())];
    assert!(!s.put_many_if_absent(&guard, &again).await.unwrap());
    assert_eq!(s.get(&guard).await.unwrap(), Some(b"record".to_vec()));
    s.delete_many(&keys).await.unwrap();
    assert!(s.scan_prefix(ns).await.unwrap().is_empty());
}
