//! Real `redis-server` processes for tests: one server, or a 3-master
//! cluster, on free loopback ports, killed when the handle drops (also when
//! the test panics).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{free_port, free_port_with_bus};
use crate::process::{ChildProcess, StartError};
use crate::server::{Launch, Server};

/// How a server is started.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The program (`redis-server` on the `PATH` by default).
    pub binary: PathBuf,
    /// Append-only file with `appendfsync always`, so a SIGKILL loses no
    /// acknowledged write and a restart keeps the data (default on).
    pub aof: bool,
    /// More `redis-server` arguments.
    pub extra_args: Vec<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            binary: PathBuf::from("redis-server"),
            aof: true,
            extra_args: Vec::new(),
        }
    }
}

/// How a `redis-server` is started: its port and options.
pub struct Redis {
    port: u16,
    options: RedisOptions,
}

impl Launch for Redis {
    const NAME: &'static str = "redis-server";

    fn launch(&self, dir: &Path) -> Result<ChildProcess, StartError> {
        let mut command = Command::new(&self.options.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args(["--logfile", ""])
            .arg("--dir")
            .arg(dir);
        if self.options.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        command.args(&self.options.extra_args);
        ChildProcess::spawn_listening(
            Self::NAME,
            command,
            &dir.join("redis.log"),
            self.port,
            Duration::from_secs(10),
        )
    }
}

/// One `redis-server` on a free loopback port, its files in a temporary
/// directory (kept across restarts).
pub type RedisServer = Server<Redis>;

impl Server<Redis> {
    /// Starts a server with the default options; panics if it cannot.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments; panics if it cannot.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let options = RedisOptions {
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            ..RedisOptions::default()
        };
        Self::launch(options).unwrap_or_else(|e| {
            panic!("redis-server did not start (scripts/install-deps.sh installs it): {e}")
        })
    }

    /// Starts a server with `options`.
    pub fn launch(options: RedisOptions) -> Result<Self, StartError> {
        let cluster = options.extra_args.iter().any(|a| a == "--cluster-enabled");
        let port = if cluster {
            free_port_with_bus()
        } else {
            free_port()
        };
        Server::launch_with(Redis { port, options })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.launcher().port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }
}

/// A 3-master Redis Cluster on free loopback ports.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them with `redis-cli --cluster create`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let conf = format!("nodes-{i}.conf");
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        'outer: while Instant::now() < deadline {
            for node in &self.nodes {
                let out = Command::new("redis-cli")
                    .args(["-p", &node.port().to_string(), "cluster", "info"])
                    .output();
                let ok = out
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false);
                if !ok {
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'outer;
                }
            }
            return;
        }
        panic!("redis cluster did not reach cluster_state:ok within 20 s");
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}
