//! Local servers that speak the AWS wire protocols, for the DynamoDB and S3
//! backends: moto (`moto_server`, DynamoDB) and SeaweedFS (`weed server
//! -s3`, S3), both installed into the project's virtualenv by
//! `scripts/install-deps.sh`. Each runs on free loopback ports and is
//! killed when its handle drops.
//!
//! The backends find credentials through the standard AWS chain; the kit
//! sets [`DUMMY_CREDENTIALS`] so the chain never reaches for instance metadata.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ports::free_ports;
use crate::process::{ChildProcess, StartError};
use crate::server::{Launch, Server};

/// Dummy credentials and region for the standard AWS chain; both servers
/// accept any credentials. (SeaweedFS takes the keys of its environment as
/// its admin identity, so clients must sign with the same ones.)
pub const DUMMY_CREDENTIALS: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "aft-test"),
    ("AWS_SECRET_ACCESS_KEY", "aft-test-secret"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Sets [`DUMMY_CREDENTIALS`] in this process's environment (idempotent),
/// so the chain never reaches for instance metadata.
pub fn dummy_credentials() {
    for (key, value) in DUMMY_CREDENTIALS {
        // Every caller sets the same values.
        std::env::set_var(key, value);
    }
}

/// A tool of the project's virtualenv: `.venv/bin/NAME` in the working
/// directory, the workspace or one of their parents; `None` if not installed.
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    let here = std::env::current_dir().unwrap_or_else(|_| workspace.clone());
    [here, workspace]
        .iter()
        .flat_map(|start| start.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .map(|dir| dir.join(".venv/bin").join(name))
        .find(|path| path.is_file())
}

fn tool(name: &str) -> PathBuf {
    venv_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// How moto is started: its port.
pub struct Moto {
    port: u16,
}

impl Launch for Moto {
    const NAME: &'static str = "moto_server";

    fn launch(&self, dir: &Path) -> Result<ChildProcess, StartError> {
        let mut command = Command::new(tool(Self::NAME));
        command.args(["-H", "127.0.0.1", "-p", &self.port.to_string()]);
        ChildProcess::spawn_listening(
            Self::NAME,
            command,
            &dir.join("moto.log"),
            self.port,
            Duration::from_secs(30),
        )
    }
}

/// moto in server mode: a DynamoDB endpoint (in memory: a restart loses
/// the data, unlike DynamoDB).
pub type MotoServer = Server<Moto>;

impl Server<Moto> {
    /// Starts one on a free port; panics if it cannot.
    pub fn start() -> Self {
        Self::launch().unwrap_or_else(|e| panic!("run scripts/install-deps.sh: {e}"))
    }

    /// Starts one on a free port.
    pub fn launch() -> Result<Self, StartError> {
        dummy_credentials();
        Server::launch_with(Moto {
            port: free_ports(1)[0],
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.launcher().port))
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A `dynamodb://` URL for `table` on this server.
    pub fn url(&self, table: &str) -> String {
        format!(
            "dynamodb://{table}?region=us-east-1&endpoint={}",
            self.endpoint()
        )
    }
}

/// SeaweedFS's port flags, in the order of [`Seaweed`]'s ports.
const SEAWEED_PORT_FLAGS: [&str; 10] = [
    "-s3.port",
    "-s3.port.grpc",
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port.iceberg",
    "-s3.port.lance",
];

/// How SeaweedFS is started: its ports (S3 first).
pub struct Seaweed {
    ports: Vec<u16>,
}

impl Seaweed {
    /// The S3 gateway listens before the filer behind it is up: wait until
    /// it answers a request with an S3 reply.
    fn wait_ready(&self, process: ChildProcess) -> Result<ChildProcess, StartError> {
        let limit = Duration::from_secs(60);
        let deadline = Instant::now() + limit;
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
                    // 403: it answers, and checks signatures.
                    if last.starts_with("HTTP/1.1 200") || last.starts_with("HTTP/1.1 403") {
                        return Ok(process);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(StartError::NotReady {
            name: "weed s3".into(),
            awaited: format!("answer S3 requests (last reply {last:?})"),
            timeout: limit,
            status: "still running".into(),
            log: process.log_tail(),
        })
    }
}

impl Launch for Seaweed {
    const NAME: &'static str = "SeaweedFS";

    fn launch(&self, dir: &Path) -> Result<ChildProcess, StartError> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|source| StartError::Log {
            path: data.clone(),
            source,
        })?;
        let mut command = Command::new(tool("weed"));
        command
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            .args(
                SEAWEED_PORT_FLAGS
                    .iter()
                    .zip(&self.ports)
                    .map(|(flag, port)| format!("{flag}={port}")),
            )
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=50"]);
        let process = ChildProcess::spawn_listening(
            "weed s3",
            command,
            &dir.join("weed.log"),
            self.ports[0],
            Duration::from_secs(60),
        )?;
        self.wait_ready(process)
    }
}

/// SeaweedFS with its S3 gateway: master, volume, filer and S3 in one
/// process, data in a temporary directory (kept across restarts).
pub type SeaweedFs = Server<Seaweed>;

impl Server<Seaweed> {
    /// Starts one on free ports; panics if it cannot.
    pub fn start() -> Self {
        Self::launch().unwrap_or_else(|e| panic!("run scripts/install-deps.sh: {e}"))
    }

    /// Starts one on free ports and waits until its S3 gateway answers.
    pub fn launch() -> Result<Self, StartError> {
        dummy_credentials();
        Server::launch_with(Seaweed {
            ports: free_ports(SEAWEED_PORT_FLAGS.len()),
        })
    }

    /// The address its S3 gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.launcher().ports[0]))
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// An `s3://` URL for `bucket` on this server.
    pub fn url(&self, bucket: &str) -> String {
        format!(
            "s3://{bucket}?region=us-east-1&endpoint={}",
            self.endpoint()
        )
    }
}

/// Creates the table or bucket `url` names and writes to it once, with a
/// generous timeout: a fresh SeaweedFS allocates its volumes on the first
/// write, which can take longer than a sidecar's storage timeout. Creation
/// is retried for up to 30 s while the server finishes starting.
pub async fn try_prepare_store(url: &str) -> Result<(), aft::storage::StorageError> {
    let options = aft::storage::StorageOptions {
        call_timeout: Duration::from_secs(60),
        ..aft::storage::StorageOptions::default()
    };
    let mut attempts = 0;
    while let Err(e) = aft::storage::create(url, options.clone()).await {
        attempts += 1;
        if attempts >= 60 {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let storage = aft::storage::open(url, options).await?;
    storage.put(b"aft/warm-up/first-write", b"1").await?;
    storage.delete(b"aft/warm-up/first-write").await?;
    Ok(())
}

/// [`try_prepare_store`], panicking if the store cannot be prepared.
pub async fn prepare_store(url: &str) {
    if let Err(e) = try_prepare_store(url).await {
        panic!("cannot prepare the table or bucket {url}: {e}");
    }
}
