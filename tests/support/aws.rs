//! Local servers that speak the AWS wire protocols, for the DynamoDB and S3
//! backends: moto (`moto_server`, DynamoDB) and SeaweedFS (`weed server
//! -s3`, S3), both installed into the project's virtualenv by
//! `scripts/install-deps.sh`. Each runs on free loopback ports and is
//! killed when its handle drops.
//!
//! The backends find credentials through the standard AWS chain; the tests
//! set `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` to dummies (both servers
//! accept any) so the chain never reaches for instance metadata.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

/// Sets dummy credentials and a region for the AWS chain (idempotent).
pub fn dummy_credentials() {
    // Tests of one binary share the process environment; every caller sets
    // the same values.
    std::env::set_var("AWS_ACCESS_KEY_ID", "aft-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "aft-test-secret");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

/// A tool of the project's virtualenv (`.venv/bin/NAME` in the workspace),
/// or `NAME` on the `PATH`.
pub fn venv_tool(name: &str) -> PathBuf {
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        let candidate = d.join(".venv/bin").join(name);
        if candidate.is_file() {
            return candidate;
        }
        dir = d.parent();
    }
    PathBuf::from(name)
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} on port {port} exited with {status}: {log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} on port {port} did not listen within {limit:?}: {log}");
}

fn spawn_logged(program: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("server log");
    let err = out.try_clone().expect("server log");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} (run scripts/install-deps.sh): {e}",
                program.display()
            )
        })
}

/// moto in server mode: a DynamoDB endpoint (in memory: a restart loses
/// the data, unlike DynamoDB).
pub struct MotoServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl MotoServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        dummy_credentials();
        let mut server = MotoServer {
            port: free_port(false),
            dir: tempfile::tempdir().expect("temp dir for moto"),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("moto.log");
        let args = vec![
            "-H".to_string(),
            "127.0.0.1".to_string(),
            "-p".to_string(),
            self.port.to_string(),
        ];
        let mut child = spawn_logged(&venv_tool("moto_server"), &args, &log);
        wait_for_port(
            self.port,
            &mut child,
            "moto_server",
            &log,
            Duration::from_secs(30),
        );
        self.child = Some(child);
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A `dynamodb://` URL for `table` on this server.
    pub fn url(&self, table: &str) -> String {
        format!(
            "dynamodb://{table}?region=us-east-1&endpoint={}",
            self.endpoint()
        )
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: moto keeps nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SeaweedFS with its S3 gateway: master, volume, filer and S3 in one
/// process, data in a temporary directory (kept across restarts).
pub struct SeaweedFs {
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SeaweedFs {
    /// Starts one on free ports.
    pub fn start() -> Self {
        dummy_credentials();
        // s3, master, volume, filer (and each one's gRPC port), iceberg, lance.
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 10 {
            let port = free_port(false);
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut server = SeaweedFs {
            ports,
            dir: tempfile::tempdir().expect("temp dir for seaweedfs"),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("seaweedfs data dir");
        let p = &self.ports;
        let args = vec![
            "server".to_string(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".to_string(),
            "-ip.bind=127.0.0.1".to_string(),
            "-s3".to_string(),
            format!("-s3.port={}", p[0]),
            format!("-s3.port.grpc={}", p[1]),
            format!("-master.port={}", p[2]),
            format!("-master.port.grpc={}", p[3]),
            format!("-volume.port={}", p[4]),
            format!("-volume.port.grpc={}", p[5]),
            format!("-filer.port={}", p[6]),
            format!("-filer.port.grpc={}", p[7]),
            format!("-s3.port.iceberg={}", p[8]),
            format!("-s3.port.lance={}", p[9]),
            "-master.volumeSizeLimitMB=64".to_string(),
            "-volume.max=50".to_string(),
        ];
        let log = self.dir.path().join("weed.log");
        let mut child = spawn_logged(&venv_tool("weed"), &args, &log);
        wait_for_port(p[0], &mut child, "weed s3", &log, Duration::from_secs(60));
        self.child = Some(child);
        self.wait_ready();
    }

    /// The S3 gateway listens before the filer behind it is up: wait until
    /// it answers a request with an S3 reply.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.ports[0])) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
                let mut reply = [0u8; 64];
                if stream.write_all(request.as_bytes()).is_ok() {
                    let n = stream.read(&mut reply).unwrap_or(0);
                    last = String::from_utf8_lossy(&reply[..n]).into_owned();
                    // 403: it answers, and checks signatures (it takes the
                    // AWS_* credentials of its environment as its admin).
                    if last.starts_with("HTTP/1.1 200") || last.starts_with("HTTP/1.1 403") {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        panic!(
            "SeaweedFS's S3 gateway was not ready within 60 s (last reply {last:?}); log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// An `s3://` URL for `bucket` on this server.
    pub fn url(&self, bucket: &str) -> String {
        format!(
            "s3://{bucket}?region=us-east-1&endpoint={}",
            self.endpoint()
        )
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports, with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates the table or bucket `url` names and writes to it once, with a
/// generous timeout: a fresh SeaweedFS allocates its volumes on the first
/// write, which can take longer than a sidecar's storage timeout.
pub async fn prepare_store(url: &str) {
    let options = aft::storage::StorageOptions {
        call_timeout: Duration::from_secs(60),
        ..aft::storage::StorageOptions::default()
    };
    aft::storage::create(url, options.clone())
        .await
        .expect("cannot create the table or bucket");
    let storage = aft::storage::open(url, options)
        .await
        .expect("cannot open the new table or bucket");
    storage
        .put(b"aft/warm-up/first-write", b"1")
        .await
        .expect("first write");
    storage
        .delete(b"aft/warm-up/first-write")
        .await
        .expect("first delete");
}
