//! Local servers that speak the AWS wire protocols, for the DynamoDB and S3
//! cells: moto (DynamoDB) and SeaweedFS's S3 gateway, from the project's
//! virtualenv (`scripts/install-deps.sh` installs them). They stand in for
//! the services, so their cells measure the sidecar's path and its storage
//! calls over a network hop, not AWS's own latency.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::procs::{free_port, ChildProcess};

/// Dummy credentials the local servers accept; the sidecars of these cells
/// get them in their environment (the standard AWS chain reads them).
pub const CREDENTIALS: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "aft-bench"),
    ("AWS_SECRET_ACCESS_KEY", "aft-bench-secret"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Which AWS store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsStore {
    /// DynamoDB, on moto.
    DynamoDb,
    /// S3, on SeaweedFS.
    S3,
}

impl AwsStore {
    fn tool(self) -> &'static str {
        match self {
            AwsStore::DynamoDb => "moto_server",
            AwsStore::S3 => "weed",
        }
    }

    /// The storage URL of the bench's table or bucket behind `endpoint`.
    pub fn url(self, endpoint: &str) -> String {
        match self {
            AwsStore::DynamoDb => {
                format!("dynamodb://aft-bench?region=us-east-1&endpoint=http://{endpoint}")
            }
            AwsStore::S3 => format!("s3://aft-bench?region=us-east-1&endpoint=http://{endpoint}"),
        }
    }
}

/// The tool in `.venv/bin` of the working directory or one of its parents.
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let start = std::env::current_dir().ok()?;
    start
        .ancestors()
        .map(|dir| dir.join(".venv/bin").join(name))
        .find(|path| path.is_file())
}

/// Starts the server for `store` on free loopback ports; `None` when its
/// tool is not installed. Returns the process and its port.
pub fn start(store: AwsStore, dir: &Path) -> anyhow::Result<Option<(ChildProcess, u16)>> {
    let Some(tool) = venv_tool(store.tool()) else {
        return Ok(None);
    };
    let port = free_port()?;
    let mut command = Command::new(&tool);
    command.envs(CREDENTIALS);
    match store {
        AwsStore::DynamoDb => {
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        }
        AwsStore::S3 => {
            let data = dir.join("seaweedfs");
            std::fs::create_dir_all(&data)?;
            let mut ports = vec![port];
            while ports.len() < 10 {
                let p = free_port()?;
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            command
                .arg("server")
                .arg(format!("-dir={}", data.display()));
            command.args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"]);
            for (flag, p) in [
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
            ]
            .iter()
            .zip(&ports)
            {
                command.arg(format!("{flag}={p}"));
            }
            command.args(["-master.volumeSizeLimitMB=64", "-volume.max=50"]);
        }
    }
    let log = dir.join(format!("{}.log", store.tool()));
    let process =
        ChildProcess::spawn_listening(store.tool(), command, &log, port, Duration::from_secs(60))?;
    Ok(Some((process, port)))
}

/// Creates the table or bucket at `url` and writes to it once (a fresh
/// SeaweedFS allocates its volumes on the first write), with a generous
/// timeout and retries while the server finishes starting.
pub fn prepare(url: &str) -> anyhow::Result<()> {
    for (key, value) in CREDENTIALS {
        if std::env::var_os(key).is_none() {
            // Only this process's own AWS calls read them; set before any
            // of them runs.
            std::env::set_var(key, value);
        }
    }
    let options = aft::storage::StorageOptions {
        call_timeout: Duration::from_secs(60),
        ..aft::storage::StorageOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut last = None;
        for _ in 0..60 {
            match aft::storage::create(url, options.clone()).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some(e) = last {
            return Err(e).context("cannot create the table or bucket");
        }
        let storage = aft::storage::open(url, options).await?;
        storage.put(b"aft/warm-up/first", b"1").await?;
        storage.delete(b"aft/warm-up/first").await?;
        Ok(())
    })
}
