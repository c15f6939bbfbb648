//! Configuration: command-line flags, `AFT_*` environment variables, and an
//! optional TOML file, in that order of precedence, over built-in defaults.
//! Every setting is listed in docs/CONFIG.md (checked against `--help` by a test).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aft::grpc::{GrpcConfig, GrpcTls};
use aft::ipc::IpcConfig;
use aft::peer::PeerConfig;
use aft::storage::{redact, StorageOptions};
use aft::txn::EngineConfig;
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
    /// Address of the HTTP server for /metrics and /health (default: the node address, port 9464; "off" disables it).
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
    /// Address of the gRPC front (AFT's `service Aft`), HOST:PORT; off unless given.
    #[arg(long, env = "AFT_GRPC_ADDR")]
    pub grpc_addr: Option<String>,
    /// File holding the bearer token every gRPC call must carry.
    #[arg(long, env = "AFT_GRPC_TOKEN_FILE")]
    pub grpc_token_file: Option<PathBuf>,
    /// Certificate chain (PEM) of the gRPC port's TLS.
    #[arg(long, env = "AFT_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the gRPC port's TLS.
    #[arg(long, env = "AFT_GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that gRPC clients' certificates must chain to (mutual TLS).
    #[arg(long, env = "AFT_GRPC_TLS_CLIENT_CA")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// Serve gRPC without a token or client certificates (only on a network nothing else reaches).
    #[arg(long, env = "AFT_GRPC_INSECURE")]
    pub grpc_insecure: bool,
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
    pub grpc_addr: Option<String>,
    pub grpc_token_file: Option<PathBuf>,
    pub grpc_tls_cert: Option<PathBuf>,
    pub grpc_tls_key: Option<PathBuf>,
    pub grpc_tls_client_ca: Option<PathBuf>,
    pub grpc_insecure: Option<bool>,
}

/// Port of the operator's HTTP endpoint when `--metrics-addr` is not given
/// (it binds the node address, so sidecars of different node addresses on
/// one host do not collide).
pub const DEFAULT_METRICS_PORT: u16 = 9464;
/// Directory of the embedded store when neither `--storage` nor `--data-dir` is given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/aft";
/// Log filter when `--log-level` is not given.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// How long in-flight requests may finish after SIGTERM/SIGINT by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The resolved configuration: the library's own configuration types, filled
/// from flags, environment and file over the library's defaults (the one
/// place defaults are written), plus what only the binary uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The storage URL.
    pub storage: String,
    /// Timeouts and limits of the storage client.
    pub storage_options: StorageOptions,
    /// Create the table or bucket the URL names before opening it.
    pub create_storage: bool,
    /// The transaction engine.
    pub engine: EngineConfig,
    /// The IPC front.
    pub ipc: IpcConfig,
    /// The peer layer; `None` when `--peer-mode off`.
    pub peer: Option<PeerConfig>,
    /// The gRPC front; `None` unless `--grpc-addr` is given.
    pub grpc: Option<GrpcConfig>,
    /// Address of the operator's HTTP endpoint; `None` when turned off.
    pub metrics_addr: Option<String>,
    /// Log filter.
    pub log_level: String,
    /// Logs as JSON lines instead of text.
    pub log_json: bool,
    /// How long in-flight requests may finish on SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file `{}`", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file `{}`", path.display()))
}

/// The flag's value, else the file's, else the default.
fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

/// A duration in milliseconds from the flag, else the file, else the default.
fn millis(flag: Option<u64>, file: Option<u64>, default: Duration) -> Duration {
    flag.or(file).map(Duration::from_millis).unwrap_or(default)
}

/// A duration in seconds from the flag, else the file, else the default.
fn secs(flag: Option<u64>, file: Option<u64>, default: Duration) -> Duration {
    flag.or(file).map(Duration::from_secs).unwrap_or(default)
}

/// `HOST:PORT`, with brackets around an IPv6 host.
fn host_port(host: &str, port: u16) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => format!("[{ip}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

impl Settings {
    /// Resolves flags and environment (already merged by clap) over the file
    /// over the library's defaults. Refuses combinations in which a setting
    /// would be silently ignored.
    pub fn resolve(cli: Cli) -> anyhow::Result<Settings> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let engine_defaults = EngineConfig::default();
        let ipc_defaults = IpcConfig::default();
        let peer_defaults = PeerConfig::default();

        let data_dir = cli.data_dir.or(file.data_dir);
        let storage = match (cli.storage.or(file.storage), data_dir) {
            (Some(url), Some(dir)) => anyhow::bail!(
                "--data-dir `{}` is used only by the embedded store that runs when no --storage \
                 is given, but --storage is `{}`: give one of them",
                dir.display(),
                redact(&url)
            ),
            (Some(url), None) => url,
            (None, dir) => format!(
                "file://{}",
                dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
                    .display()
            ),
        };
        let log_json = match pick(cli.log_format, file.log_format, "text".into()).as_str() {
            "text" => false,
            "json" => true,
            other => anyhow::bail!("unknown log format `{other}` (expected text or json)"),
        };
        let socket_mode = cli.socket_mode.or(file.socket_mode);
        let socket_mode = match socket_mode {
            None => ipc_defaults.socket_mode,
            Some(text) => u32::from_str_radix(&text, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .with_context(|| {
                    format!("invalid socket mode `{text}` (expected octal, e.g. 660)")
                })?,
        };
        let node_address = pick(
            cli.node_address,
            file.node_address,
            engine_defaults.node_address.clone(),
        );
        let metrics_addr = pick(
            cli.metrics_addr,
            file.metrics_addr,
            host_port(&node_address, DEFAULT_METRICS_PORT),
        );
        let storage_timeout = millis(
            cli.storage_timeout_ms,
            file.storage_timeout_ms,
            engine_defaults.storage_timeout,
        );
        let max_value_bytes = pick(
            cli.max_value_bytes,
            file.max_value_bytes,
            engine_defaults.max_value_bytes,
        );
        let peer = PeerChoice {
            mode: pick(cli.peer_mode, file.peer_mode, "off".into()),
            port: cli.peer_port.or(file.peer_port),
            bind: cli.peer_bind.or(file.peer_bind),
            seeds: cli.peers.or(file.peers),
            discovery_dns: cli.peer_discovery_dns.or(file.peer_discovery_dns),
            timeout_ms: cli.peer_timeout_ms.or(file.peer_timeout_ms),
            dead_after_ms: cli.peer_dead_after_ms.or(file.peer_dead_after_ms),
            key_file: cli.peer_key_file.or(file.peer_key_file),
        }
        .resolve(&node_address, storage_timeout, peer_defaults)?
        .map(|mut peer| {
            // A forwarded gRPC commit may take until the holder decides it.
            peer.client_commit_timeout = millis(
                cli.decision_timeout_ms,
                file.decision_timeout_ms,
                engine_defaults.decision_timeout,
            ) + storage_timeout * 2
                + peer.request_timeout;
            peer
        });

        let grpc = GrpcChoice {
            addr: cli.grpc_addr.or(file.grpc_addr),
            token_file: cli.grpc_token_file.or(file.grpc_token_file),
            cert: cli.grpc_tls_cert.or(file.grpc_tls_cert),
            key: cli.grpc_tls_key.or(file.grpc_tls_key),
            client_ca: cli.grpc_tls_client_ca.or(file.grpc_tls_client_ca),
            insecure: cli.grpc_insecure || file.grpc_insecure.unwrap_or(false),
        }
        .resolve(max_value_bytes, &node_address)?;
        let engine = EngineConfig {
            node_address: node_address.clone(),
            max_value_bytes,
            max_txn_write_bytes: pick(
                cli.max_txn_bytes,
                file.max_txn_bytes,
                engine_defaults.max_txn_write_bytes,
            ),
            max_open_txns: pick(
                cli.max_open_txns,
                file.max_open_txns,
                engine_defaults.max_open_txns,
            ),
            lease: secs(
                cli.txn_lease_secs,
                file.txn_lease_secs,
                engine_defaults.lease,
            ),
            cache_bytes: pick(
                cli.cache_bytes,
                file.cache_bytes,
                engine_defaults.cache_bytes,
            ),
            decision_timeout: millis(
                cli.decision_timeout_ms,
                file.decision_timeout_ms,
                engine_defaults.decision_timeout,
            ),
            ship_values_up_to: pick(
                cli.peer_ship_values_bytes,
                file.peer_ship_values_bytes,
                engine_defaults.ship_values_up_to,
            ),
            orphan_grace: secs(
                cli.orphan_grace_secs,
                file.orphan_grace_secs,
                engine_defaults.orphan_grace,
            ),
            orphan_sweep_interval: secs(
                cli.orphan_sweep_secs,
                file.orphan_sweep_secs,
                engine_defaults.orphan_sweep_interval,
            )
            .max(Duration::from_secs(1)),
            publish_sweep_interval: millis(
                cli.publish_sweep_ms,
                file.publish_sweep_ms,
                engine_defaults.publish_sweep_interval,
            )
            .max(Duration::from_millis(10)),
            outcome_retention: pick(
                cli.outcome_retention,
                file.outcome_retention,
                engine_defaults.outcome_retention,
            )
            .max(1),
            storage_timeout,
            write_horizon: millis(
                cli.write_horizon_ms,
                file.write_horizon_ms,
                EngineConfig::write_horizon_for(storage_timeout),
            ),
            client_timeout: millis(
                cli.client_timeout_ms,
                file.client_timeout_ms,
                engine_defaults.client_timeout,
            )
            .max(Duration::from_millis(1)),
            retired_record_retention: secs(
                cli.retired_record_retention_secs,
                file.retired_record_retention_secs,
                engine_defaults.retired_record_retention,
            ),
            clustered: peer.is_some(),
            ..engine_defaults
        };
        let ipc = IpcConfig {
            ipc_dir: pick(cli.ipc_dir, file.ipc_dir, ipc_defaults.ipc_dir.clone()),
            client_ipc_dir: pick(
                cli.client_ipc_dir,
                file.client_ipc_dir,
                ipc_defaults.client_ipc_dir.clone(),
            ),
            allow_tcp_replies: cli.allow_tcp_replies || file.allow_tcp_replies.unwrap_or(false),
            max_pending_per_client: pick(
                cli.max_pending_per_client,
                file.max_pending_per_client,
                ipc_defaults.max_pending_per_client,
            ),
            max_request_bytes: IpcConfig::request_bytes_for(max_value_bytes),
            socket_mode,
            socket_group: cli.socket_group.or(file.socket_group),
            allow_world_writable_dir: cli.allow_world_writable_ipc_dir
                || file.allow_world_writable_ipc_dir.unwrap_or(false),
            ..ipc_defaults
        };
        Ok(Settings {
            storage,
            storage_options: StorageOptions {
                // Stored records carry metadata beside the value.
                max_value_bytes: max_value_bytes.max(1).saturating_mul(2),
                call_timeout: storage_timeout,
                connect_timeout: storage_timeout,
            },
            create_storage: cli.create_storage || file.create_storage.unwrap_or(false),
            engine,
            ipc,
            peer,
            grpc,
            metrics_addr: (metrics_addr != "off").then_some(metrics_addr),
            log_level: pick(cli.log_level, file.log_level, DEFAULT_LOG_LEVEL.into()),
            log_json,
            shutdown_grace: secs(
                cli.shutdown_grace_secs,
                file.shutdown_grace_secs,
                DEFAULT_SHUTDOWN_GRACE,
            ),
        })
    }

    /// Lowers the largest value accepted to what the opened store can hold
    /// (`limit` bytes per stored record); returns the new limit if it was lowered.
    pub fn fit_values_to(&mut self, limit: usize) -> Option<usize> {
        // Leave room for the one byte a first write's saved base adds.
        let fits = limit.saturating_sub(1);
        (self.engine.max_value_bytes > fits).then(|| {
            self.engine.max_value_bytes = fits;
            fits
        })
    }
}

/// The peer settings as given, before they are checked against the mode.
struct PeerChoice {
    mode: String,
    port: Option<u16>,
    bind: Option<String>,
    seeds: Option<String>,
    discovery_dns: Option<String>,
    timeout_ms: Option<u64>,
    dead_after_ms: Option<u64>,
    key_file: Option<PathBuf>,
}

impl PeerChoice {
    /// The peer layer's configuration, or `None` when it is off. Peer
    /// settings given while the layer is off, or a key file without
    /// `sealed`, are refused: they would be ignored.
    fn resolve(
        self,
        node_address: &str,
        storage_timeout: Duration,
        defaults: PeerConfig,
    ) -> anyhow::Result<Option<PeerConfig>> {
        let given: Vec<&str> = [
            ("--peers", self.seeds.is_some()),
            ("--peer-discovery-dns", self.discovery_dns.is_some()),
            ("--peer-port", self.port.is_some()),
            ("--peer-bind", self.bind.is_some()),
            ("--peer-timeout-ms", self.timeout_ms.is_some()),
            ("--peer-dead-after-ms", self.dead_after_ms.is_some()),
            ("--peer-key-file", self.key_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        let key = match self.mode.as_str() {
            "off" if given.is_empty() => return Ok(None),
            "off" => {
                let which = if given.len() == 1 { "it" } else { "them" };
                anyhow::bail!(
                    "{} given, but the peer layer is off (the default) and would ignore {which}: \
                     to run DAGs across nodes add --peer-mode plaintext (on a network only the \
                     sidecars can reach) or --peer-mode sealed with --peer-key-file; otherwise \
                     remove {which}",
                    given.join(", ")
                )
            }
            "plaintext" if self.key_file.is_some() => anyhow::bail!(
                "--peer-key-file is used only with --peer-mode sealed, but the mode is plaintext: \
                 choose sealed to encrypt peer traffic with that key, or remove the key file"
            ),
            "plaintext" => None,
            "sealed" => {
                let path = self
                    .key_file
                    .context("--peer-mode sealed needs --peer-key-file")?;
                Some(read_peer_key(&path)?)
            }
            other => {
                anyhow::bail!("unknown peer mode `{other}` (expected off, plaintext or sealed)")
            }
        };
        let port = self.port.unwrap_or(defaults.peer_port);
        let request_timeout = millis(self.timeout_ms, None, defaults.request_timeout);
        Ok(Some(PeerConfig {
            node_address: node_address.to_string(),
            bind: self.bind.unwrap_or_else(|| host_port(node_address, port)),
            peer_port: port,
            seeds: self
                .seeds
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            discovery_dns: self.discovery_dns,
            request_timeout,
            // A participant writes to storage (up to two calls) before it votes.
            prepare_timeout: storage_timeout * 2 + request_timeout,
            dead_after: millis(self.dead_after_ms, None, defaults.dead_after),
            key,
            ..defaults
        }))
    }
}

/// The gRPC settings as given, before they are checked.
struct GrpcChoice {
    addr: Option<String>,
    token_file: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure: bool,
}

impl GrpcChoice {
    /// The gRPC front's configuration, or `None` when no address is given.
    /// Refuses settings without an address, half a TLS identity, and an
    /// address with no authentication unless `--grpc-insecure` asks for it.
    fn resolve(
        self,
        max_value_bytes: usize,
        node_address: &str,
    ) -> anyhow::Result<Option<GrpcConfig>> {
        let given: Vec<&str> = [
            ("--grpc-token-file", self.token_file.is_some()),
            ("--grpc-tls-cert", self.cert.is_some()),
            ("--grpc-tls-key", self.key.is_some()),
            ("--grpc-tls-client-ca", self.client_ca.is_some()),
            ("--grpc-insecure", self.insecure),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        let Some(addr) = self.addr else {
            if given.is_empty() {
                return Ok(None);
            }
            anyhow::bail!(
                "{} given, but the gRPC front is off: add --grpc-addr HOST:PORT to serve it, or remove {}",
                given.join(", "),
                if given.len() == 1 { "it" } else { "them" }
            );
        };
        let addr: std::net::SocketAddr = addr
            .parse()
            .with_context(|| format!("invalid --grpc-addr `{addr}` (expected IP:PORT)"))?;
        if !aft::grpc::tid::RoutedTid::valid_node(node_address) {
            anyhow::bail!(
                "--node-address `{node_address}` cannot be named in a gRPC transaction id \
                 (letters, digits, `.`, `:`, `-`, `[`, `]`; at most 253 characters)"
            );
        }
        let read = |path: &Path, what: &str| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the gRPC {what} `{}`", path.display()))
        };
        let tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(GrpcTls {
                cert_pem: read(cert, "certificate")?,
                key_pem: read(key, "key")?,
                client_ca_pem: self
                    .client_ca
                    .as_deref()
                    .map(|ca| read(ca, "client CA"))
                    .transpose()?,
            }),
            (None, None) if self.client_ca.is_some() => anyhow::bail!(
                "--grpc-tls-client-ca needs the server's own --grpc-tls-cert and --grpc-tls-key"
            ),
            (None, None) => None,
            _ => anyhow::bail!("--grpc-tls-cert and --grpc-tls-key go together"),
        };
        let token = self
            .token_file
            .as_deref()
            .map(read_grpc_token)
            .transpose()?;
        let authenticated = token.is_some() || self.client_ca.is_some();
        if authenticated && self.insecure {
            anyhow::bail!("--grpc-insecure contradicts the token or client CA given: remove one");
        }
        if !authenticated && !self.insecure {
            anyhow::bail!(
                "the gRPC front needs authentication: --grpc-token-file FILE (a bearer token on \
                 every call) or --grpc-tls-client-ca FILE (mutual TLS), or --grpc-insecure to \
                 serve without, on a network nothing else reaches"
            );
        }
        Ok(Some(GrpcConfig {
            addr,
            token,
            tls,
            // Below the peer frame limit, so a forwarded write always fits.
            max_message_bytes: IpcConfig::request_bytes_for(max_value_bytes).min(48 << 20),
            max_keys: 10_000,
        }))
    }
}

/// Reads a gRPC bearer token file: its first line that is neither blank nor
/// a `#` comment, at least 16 characters of printable ASCII.
fn read_grpc_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the gRPC token file `{}`", path.display()))?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "gRPC token file `{}`: the token must be at least 16 printable ASCII characters",
            path.display()
        );
    }
    Ok(token.to_string())
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
