//! Configuration: command-line flags, `AFT_*` environment variables, and an
//! optional TOML file, in that order of precedence, over built-in defaults.
//! Every setting is listed in docs/CONFIG.md (checked against `--help` by a test).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde::Deserialize;

/// aft-sidecar: a per-node read-atomic cache for Cloudburst-style executors.
#[derive(Debug, Parser)]
#[command(name = "aft-sidecar", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (flags and environment override it).
    #[arg(long, env = "AFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the IPC endpoint sockets.
    #[arg(long, env = "AFT_IPC_DIR")]
    pub ipc_dir: Option<PathBuf>,
    /// The IPC directory as executors name it in reply addresses (their mount point).
    #[arg(long, env = "AFT_CLIENT_IPC_DIR")]
    pub client_ipc_dir: Option<String>,
    /// Storage URL: file://PATH, redis://HOST:PORT, redis+cluster://H1:P1,H2:P2, anna://HOST[:PORT], dynamodb://TABLE?region=R, s3://BUCKET[/PREFIX]?region=R.
    #[arg(long, env = "AFT_STORAGE")]
    pub storage: Option<String>,
    /// Create the DynamoDB table or S3 bucket named by --storage if it is missing, then start.
    #[arg(long, env = "AFT_CREATE_STORAGE")]
    pub create_storage: bool,
    /// Directory of the embedded store when --storage is not given.
    #[arg(long, env = "AFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's address as executors and peers know it (a bare IP).
    #[arg(long, env = "AFT_NODE_ADDRESS")]
    pub node_address: Option<String>,
    /// Address of the HTTP server for /metrics and /health ("off" disables it).
    #[arg(long, env = "AFT_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Log filter (e.g. info, aft=debug).
    #[arg(long, env = "AFT_LOG")]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "AFT_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Largest value (serialized LWWValue) accepted, bytes.
    #[arg(long, env = "AFT_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Largest total of buffered writes in one transaction, bytes.
    #[arg(long, env = "AFT_MAX_TXN_BYTES")]
    pub max_txn_bytes: Option<usize>,
    /// Most transactions open at once on this node.
    #[arg(long, env = "AFT_MAX_OPEN_TXNS")]
    pub max_open_txns: Option<usize>,
    /// Seconds of inactivity after which a transaction is aborted.
    #[arg(long, env = "AFT_TXN_LEASE_SECS")]
    pub txn_lease_secs: Option<u64>,
    /// Bytes the value cache may hold.
    #[arg(long, env = "AFT_CACHE_BYTES")]
    pub cache_bytes: Option<u64>,
    /// Timeout of one storage call, milliseconds.
    #[arg(long, env = "AFT_STORAGE_TIMEOUT_MS")]
    pub storage_timeout_ms: Option<u64>,
    /// Most replies owed to one client at once.
    #[arg(long, env = "AFT_MAX_PENDING_PER_CLIENT")]
    pub max_pending_per_client: Option<usize>,
    /// Permission bits of the socket files, octal (e.g. 660).
    #[arg(long, env = "AFT_SOCKET_MODE")]
    pub socket_mode: Option<String>,
    /// Numeric group id given to the socket files (executors in that group can connect).
    #[arg(long, env = "AFT_SOCKET_GROUP")]
    pub socket_group: Option<u32>,
    /// Accept tcp:// reply addresses (default: ipc:// inside the IPC directory only).
    #[arg(long, env = "AFT_ALLOW_TCP_REPLIES")]
    pub allow_tcp_replies: bool,
    /// Serve from a world-writable IPC directory (not recommended).
    #[arg(long, env = "AFT_ALLOW_WORLD_WRITABLE_IPC_DIR")]
    pub allow_world_writable_ipc_dir: bool,
    /// Seconds to let in-flight requests finish on SIGTERM/SIGINT.
    #[arg(long, env = "AFT_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Peer layer (multi-node DAGs): off, plaintext, or sealed (encrypted and authenticated with --peer-key-file).
    #[arg(long, env = "AFT_PEER_MODE")]
    pub peer_mode: Option<String>,
    /// TCP port of the peer endpoint, the same on every node.
    #[arg(long, env = "AFT_PEER_PORT")]
    pub peer_port: Option<u16>,
    /// Address the peer endpoint binds (default: the node address).
    #[arg(long, env = "AFT_PEER_BIND")]
    pub peer_bind: Option<String>,
    /// Seed peers: comma-separated node addresses (IPs, or ip:port).
    #[arg(long, env = "AFT_PEERS")]
    pub peers: Option<String>,
    /// DNS name whose addresses are peers (e.g. a Kubernetes headless Service).
    #[arg(long, env = "AFT_PEER_DISCOVERY_DNS")]
    pub peer_discovery_dns: Option<String>,
    /// Timeout of one peer request, milliseconds.
    #[arg(long, env = "AFT_PEER_TIMEOUT_MS")]
    pub peer_timeout_ms: Option<u64>,
    /// A peer not heard from for this long is declared dead, milliseconds.
    #[arg(long, env = "AFT_PEER_DEAD_AFTER_MS")]
    pub peer_dead_after_ms: Option<u64>,
    /// A prepared participant that hears no decision for this long settles it from storage, milliseconds.
    #[arg(long, env = "AFT_DECISION_TIMEOUT_MS")]
    pub decision_timeout_ms: Option<u64>,
    /// A DAG's values a node hands to another along with its state and votes, bytes (0: none).
    #[arg(long, env = "AFT_PEER_SHIP_VALUES_BYTES")]
    pub peer_ship_values_bytes: Option<usize>,
    /// Finished transactions whose outcome is remembered for retried commits and aborts.
    #[arg(long, env = "AFT_OUTCOME_RETENTION")]
    pub outcome_retention: Option<usize>,
    /// Data of transactions without a commit record is collected once they are this old, seconds.
    #[arg(long, env = "AFT_ORPHAN_GRACE_SECS")]
    pub orphan_grace_secs: Option<u64>,
    /// How often storage is swept for such orphaned data, seconds.
    #[arg(long, env = "AFT_ORPHAN_SWEEP_SECS")]
    pub orphan_sweep_secs: Option<u64>,
    /// How often storage is swept for committed values a crashed node did not publish to their plain keys, milliseconds.
    #[arg(long, env = "AFT_PUBLISH_SWEEP_MS")]
    pub publish_sweep_ms: Option<u64>,
    /// How long the commit record of a fully superseded transaction is kept for retried commits, seconds.
    #[arg(long, env = "AFT_RETIRED_RECORD_RETENTION_SECS")]
    pub retired_record_retention_secs: Option<u64>,
    /// How long executors wait for a get or put before giving up (Cloudburst: 5 s), milliseconds.
    #[arg(long, env = "AFT_CLIENT_TIMEOUT_MS")]
    pub client_timeout_ms: Option<u64>,
    /// Stores without conditional writes (Anna): a write is applied within this long after it is sent, or never, milliseconds.
    #[arg(long, env = "AFT_WRITE_HORIZON_MS")]
    pub write_horizon_ms: Option<u64>,
    /// File holding the cluster's peer key (64 hex digits), for --peer-mode sealed.
    #[arg(long, env = "AFT_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Print a new peer key for --peer-key-file and exit.
    #[arg(long)]
    pub generate_peer_key: bool,
}

/// The same settings in a TOML file (keys use underscores).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub ipc_dir: Option<PathBuf>,
    pub client_ipc_dir: Option<String>,
    pub storage: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub node_address: Option<String>,
    pub metrics_addr: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub max_value_bytes: Option<usize>,
    pub max_txn_bytes: Option<usize>,
    pub max_open_txns: Option<usize>,
    pub txn_lease_secs: Option<u64>,
    pub cache_bytes: Option<u64>,
    pub storage_timeout_ms: Option<u64>,
    pub max_pending_per_client: Option<usize>,
    pub socket_mode: Option<String>,
    pub socket_group: Option<u32>,
    pub allow_tcp_replies: Option<bool>,
    pub allow_world_writable_ipc_dir: Option<bool>,
    pub create_storage: Option<bool>,
    pub shutdown_grace_secs: Option<u64>,
    pub peer_mode: Option<String>,
    pub peer_port: Option<u16>,
    pub peer_bind: Option<String>,
    pub peers: Option<String>,
    pub peer_discovery_dns: Option<String>,
    pub peer_timeout_ms: Option<u64>,
    pub peer_dead_after_ms: Option<u64>,
    pub peer_key_file: Option<PathBuf>,
    pub decision_timeout_ms: Option<u64>,
    pub peer_ship_values_bytes: Option<usize>,
    pub orphan_grace_secs: Option<u64>,
    pub orphan_sweep_secs: Option<u64>,
    pub publish_sweep_ms: Option<u64>,
    pub write_horizon_ms: Option<u64>,
    pub client_timeout_ms: Option<u64>,
    pub retired_record_retention_secs: Option<u64>,
    pub outcome_retention: Option<usize>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ipc_dir: PathBuf,
    pub client_ipc_dir: String,
    pub storage: String,
    pub node_address: String,
    pub metrics_addr: Option<String>,
    pub log_level: String,
    pub log_json: bool,
    pub max_value_bytes: usize,
    pub max_txn_bytes: usize,
    pub max_open_txns: usize,
    pub txn_lease: Duration,
    pub cache_bytes: u64,
    pub storage_timeout: Duration,
    pub max_pending_per_client: usize,
    pub socket_mode: u32,
    pub socket_group: Option<u32>,
    pub allow_tcp_replies: bool,
    pub allow_world_writable_ipc_dir: bool,
    pub create_storage: bool,
    pub shutdown_grace: Duration,
    pub peers: Option<PeerSettings>,
    pub decision_timeout: Duration,
    pub peer_ship_values_bytes: usize,
    pub orphan_grace: Duration,
    pub orphan_sweep: Duration,
    pub publish_sweep: Duration,
    pub write_horizon: Duration,
    pub client_timeout: Duration,
    pub retired_record_retention: Duration,
    pub outcome_retention: usize,
}

/// How this node talks to other sidecars (present when the peer layer is on).
#[derive(Debug, Clone)]
pub struct PeerSettings {
    pub port: u16,
    pub bind: String,
    pub seeds: Vec<String>,
    pub discovery_dns: Option<String>,
    pub timeout: Duration,
    pub dead_after: Duration,
    /// `None` = plaintext (chosen explicitly with --peer-mode plaintext).
    pub key: Option<aft::peer::PeerKey>,
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file `{}`", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file `{}`", path.display()))
}

impl Settings {
    /// Resolves flags and environment (already merged by clap) over the file over defaults.
    pub fn resolve(cli: Cli) -> anyhow::Result<Settings> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = cli
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/aft"));
        let storage = cli
            .storage
            .or(file.storage)
            .unwrap_or_else(|| format!("file://{}", data_dir.display()));
        let metrics_addr = cli
            .metrics_addr
            .or(file.metrics_addr)
            .unwrap_or_else(|| "127.0.0.1:9464".into());
        let log_format = cli
            .log_format
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        let log_json = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => anyhow::bail!("unknown log format `{other}` (expected text or json)"),
        };
        let socket_mode = cli
            .socket_mode
            .or(file.socket_mode)
            .unwrap_or_else(|| "660".into());
        let socket_mode = u32::from_str_radix(&socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .with_context(|| {
                format!("invalid socket mode `{socket_mode}` (expected octal, e.g. 660)")
            })?;
        let node_address = cli
            .node_address
            .or(file.node_address)
            .unwrap_or_else(|| "127.0.0.1".into());
        let peer_mode = cli
            .peer_mode
            .or(file.peer_mode)
            .unwrap_or_else(|| "off".into());
        let peers = match peer_mode.as_str() {
            "off" => None,
            "plaintext" | "sealed" => {
                let port = cli.peer_port.or(file.peer_port).unwrap_or(7150);
                let key = if peer_mode == "sealed" {
                    let path = cli
                        .peer_key_file
                        .or(file.peer_key_file)
                        .context("--peer-mode sealed needs --peer-key-file")?;
                    Some(read_peer_key(&path)?)
                } else {
                    None
                };
                Some(PeerSettings {
                    port,
                    bind: cli.peer_bind.or(file.peer_bind).unwrap_or_else(|| {
                        match node_address.parse::<std::net::Ipv6Addr>() {
                            Ok(ip) => format!("[{ip}]:{port}"),
                            Err(_) => format!("{node_address}:{port}"),
                        }
                    }),
                    seeds: cli
                        .peers
                        .or(file.peers)
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    discovery_dns: cli.peer_discovery_dns.or(file.peer_discovery_dns),
                    timeout: Duration::from_millis(
                        cli.peer_timeout_ms.or(file.peer_timeout_ms).unwrap_or(1500),
                    ),
                    dead_after: Duration::from_millis(
                        cli.peer_dead_after_ms
                            .or(file.peer_dead_after_ms)
                            .unwrap_or(2000),
                    ),
                    key,
                })
            }
            other => {
                anyhow::bail!("unknown peer mode `{other}` (expected off, plaintext or sealed)")
            }
        };
        let storage_timeout = Duration::from_millis(
            cli.storage_timeout_ms
                .or(file.storage_timeout_ms)
                .unwrap_or(2000),
        );
        Ok(Settings {
            outcome_retention: cli
                .outcome_retention
                .or(file.outcome_retention)
                .unwrap_or(100_000)
                .max(1),
            orphan_grace: Duration::from_secs(
                cli.orphan_grace_secs
                    .or(file.orphan_grace_secs)
                    .unwrap_or(120),
            ),
            orphan_sweep: Duration::from_secs(
                cli.orphan_sweep_secs
                    .or(file.orphan_sweep_secs)
                    .unwrap_or(300)
                    .max(1),
            ),
            publish_sweep: Duration::from_millis(
                cli.publish_sweep_ms
                    .or(file.publish_sweep_ms)
                    .unwrap_or(5_000)
                    .max(10),
            ),
            decision_timeout: Duration::from_millis(
                cli.decision_timeout_ms
                    .or(file.decision_timeout_ms)
                    .unwrap_or(10_000),
            ),
            peer_ship_values_bytes: cli
                .peer_ship_values_bytes
                .or(file.peer_ship_values_bytes)
                .unwrap_or(1 << 20),
            peers,
            ipc_dir: cli
                .ipc_dir
                .or(file.ipc_dir)
                .unwrap_or_else(|| PathBuf::from("/requests")),
            client_ipc_dir: cli
                .client_ipc_dir
                .or(file.client_ipc_dir)
                .unwrap_or_else(|| "/requests".into()),
            storage,
            node_address,
            metrics_addr: (metrics_addr != "off").then_some(metrics_addr),
            log_level: cli
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_json,
            max_value_bytes: cli
                .max_value_bytes
                .or(file.max_value_bytes)
                .unwrap_or(aft::storage::DEFAULT_MAX_VALUE_BYTES),
            max_txn_bytes: cli.max_txn_bytes.or(file.max_txn_bytes).unwrap_or(64 << 20),
            max_open_txns: cli.max_open_txns.or(file.max_open_txns).unwrap_or(100_000),
            txn_lease: Duration::from_secs(
                cli.txn_lease_secs.or(file.txn_lease_secs).unwrap_or(60),
            ),
            cache_bytes: cli.cache_bytes.or(file.cache_bytes).unwrap_or(256 << 20),
            storage_timeout,
            retired_record_retention: Duration::from_secs(
                cli.retired_record_retention_secs
                    .or(file.retired_record_retention_secs)
                    .unwrap_or(600),
            ),
            client_timeout: Duration::from_millis(
                cli.client_timeout_ms
                    .or(file.client_timeout_ms)
                    .unwrap_or(5000)
                    .max(1),
            ),
            write_horizon: Duration::from_millis(
                cli.write_horizon_ms
                    .or(file.write_horizon_ms)
                    .unwrap_or(storage_timeout.as_millis() as u64 * 3),
            ),
            max_pending_per_client: cli
                .max_pending_per_client
                .or(file.max_pending_per_client)
                .unwrap_or(1024),
            socket_mode,
            socket_group: cli.socket_group.or(file.socket_group),
            allow_tcp_replies: cli.allow_tcp_replies || file.allow_tcp_replies.unwrap_or(false),
            allow_world_writable_ipc_dir: cli.allow_world_writable_ipc_dir
                || file.allow_world_writable_ipc_dir.unwrap_or(false),
            create_storage: cli.create_storage || file.create_storage.unwrap_or(false),
            shutdown_grace: Duration::from_secs(
                cli.shutdown_grace_secs
                    .or(file.shutdown_grace_secs)
                    .unwrap_or(10),
            ),
        })
    }
}

/// Reads the peer key file: 64 hex digits (lines starting with `#` are comments).
fn read_peer_key(path: &Path) -> anyhow::Result<aft::peer::PeerKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read peer key file `{}`", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    aft::peer::PeerKey::from_hex(line)
        .map_err(|e| anyhow::anyhow!("peer key file `{}`: {e}", path.display()))
}
