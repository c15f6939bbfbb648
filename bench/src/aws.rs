//! Local servers that speak the AWS wire protocols, for the DynamoDB and S3
//! cells: moto (DynamoDB) and SeaweedFS's S3 gateway, from the project's
//! virtualenv (`scripts/install-deps.sh` installs them). They stand in for
//! the services, so their cells measure the sidecar's path and its storage
//! calls over a network hop, not AWS's own latency.

use std::net::SocketAddr;

use aft_testkit::aws::{try_prepare_store, venv_tool, MotoServer, SeaweedFs};
use aft_testkit::process::OwnsProcess;
use anyhow::Context;

pub use aft_testkit::aws::DUMMY_CREDENTIALS as CREDENTIALS;

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

/// Starts the server for `store` on free loopback ports (the test kit's
/// moto or SeaweedFS); `None` when its tool is not installed. Returns the
/// server and the address it listens on.
pub fn start(store: AwsStore) -> anyhow::Result<Option<(Box<dyn OwnsProcess>, SocketAddr)>> {
    if venv_tool(store.tool()).is_none() {
        return Ok(None);
    }
    Ok(Some(match store {
        AwsStore::DynamoDb => {
            let server = MotoServer::launch()?;
            let addr = server.addr();
            (Box::new(server), addr)
        }
        AwsStore::S3 => {
            let server = SeaweedFs::launch()?;
            let addr = server.addr();
            (Box::new(server), addr)
        }
    }))
}

/// Creates the table or bucket at `url` and writes to it once (a fresh
/// SeaweedFS allocates its volumes on the first write).
pub fn prepare(url: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(try_prepare_store(url))
        .with_context(|| format!("cannot prepare {url}"))
}
