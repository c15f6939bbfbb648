//! Dropping the last client handle stops its socket threads (and its
//! ZeroMQ context's). (A test
//! binary of its own: it counts the process's threads.)

use std::time::{Duration, Instant};

use anna_client::test_server::TestServer;
use anna_client::AnnaClient;

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_client_stops_its_threads() -> Result<(), Box<dyn std::error::Error>> {
    if thread_count() == 0 {
        return Ok(()); // no procfs: nothing to count
    }
    let server = TestServer::start_default()?;
    let before = thread_count();
    let client = AnnaClient::connect(server.client_config()).await?;
    let clone = client.clone();
    client.put("k", b"v").await?;
    // Two socket threads, plus libzmq's own I/O and reaper threads.
    assert!(thread_count() >= before + 2);
    drop(client);
    assert_eq!(clone.get("k").await?, Some(b"v".to_vec()));
    drop(clone);
    let deadline = Instant::now() + Duration::from_secs(2);
    while thread_count() > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(thread_count(), before);
    Ok(())
}
