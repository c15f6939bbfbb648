//! Client configuration.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};

/// The port of routing thread 0 on an Anna routing node (thread `t`
/// listens on `6450 + t`).
pub const ROUTING_BASE_PORT: u16 = 6450;
/// The port of KVS thread 0 on an Anna storage node (thread `t` listens on
/// `6200 + t`). The client never needs it: routing answers with full
/// addresses.
pub const KVS_BASE_PORT: u16 = 6200;

/// How to reach Anna and how patient to be with it.
///
/// Build one with [`ClientConfig::new`] and adjust the public fields.
///
/// ```
/// use std::time::Duration;
/// use anna_client::ClientConfig;
///
/// let mut config = ClientConfig::new("anna-routing.default.svc")
///     .with_routing_threads(4);
/// config.request_timeout = Duration::from_millis(500);
/// assert_eq!(config.routing[0], "tcp://anna-routing.default.svc:6450");
/// assert_eq!(config.routing.len(), 4);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Routing endpoints, each `tcp://host:port`. Address requests go to
    /// one picked at random; a timed-out one is retried on another.
    pub routing: Vec<String>,
    /// The IP put in this client's response addresses; Anna nodes connect
    /// back to it. `None`: the local address of the route to the first
    /// routing endpoint (found with a connected UDP socket; no packet is
    /// sent).
    pub response_ip: Option<IpAddr>,
    /// The IP the response sockets bind to. `None`: the response IP.
    pub bind_ip: Option<IpAddr>,
    /// Port of the key-address response socket; 0 picks a free one.
    pub address_response_port: u16,
    /// Port of the KVS response socket; 0 picks a free one.
    pub kvs_response_port: u16,
    /// How long one attempt (an address lookup or a KVS request) waits
    /// for its answer before it is retried.
    pub request_timeout: Duration,
    /// Upper bound on one client call, all retries included.
    pub operation_timeout: Duration,
    /// How many rounds of attempts one call makes at most.
    pub max_attempts: u32,
    /// First retry delay; doubles per round, with jitter.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// How many keys' addresses are cached at most (about 100 bytes per
    /// key: address lists are shared).
    pub address_cache_capacity: usize,
}

impl ClientConfig {
    /// A configuration for the routing node `host` (`host` or
    /// `host:port`; the port defaults to [`ROUTING_BASE_PORT`]) with
    /// default timeouts: 1 s per attempt, 3 s per call (well under the 5 s
    /// Cloudburst executors wait), 8 attempts, backoff 5 ms doubling to
    /// 200 ms.
    ///
    /// ```
    /// # use anna_client::ClientConfig;
    /// assert_eq!(ClientConfig::new("10.0.0.1:7000").routing, ["tcp://10.0.0.1:7000"]);
    /// assert_eq!(ClientConfig::new("[::1]").routing, ["tcp://[::1]:6450"]);
    /// ```
    pub fn new(host: &str) -> Self {
        let (h, port) = split_host_port(host);
        Self::with_routing_endpoints(vec![format!(
            "tcp://{h}:{}",
            port.unwrap_or(ROUTING_BASE_PORT)
        )])
    }

    /// A configuration with explicit routing endpoints (`tcp://host:port`
    /// each) and default timeouts.
    pub fn with_routing_endpoints(routing: Vec<String>) -> Self {
        ClientConfig {
            routing,
            response_ip: None,
            bind_ip: None,
            address_response_port: 0,
            kvs_response_port: 0,
            request_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(3),
            max_attempts: 8,
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(200),
            address_cache_capacity: 1_000_000,
        }
    }

    /// Expands the first routing endpoint to `threads` endpoints on
    /// consecutive ports (an Anna routing node runs thread `t` on
    /// `base + t`).
    pub fn with_routing_threads(mut self, threads: u16) -> Self {
        if let Some(first) = self.routing.first().cloned() {
            if let Some((host, port)) = first
                .rsplit_once(':')
                .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_owned(), p)))
            {
                self.routing = (0..threads.max(1))
                    .map(|t| format!("{host}:{}", port.saturating_add(t)))
                    .collect();
            }
        }
        self
    }

    /// Sets the IP put in response addresses (and bound to).
    pub fn with_response_ip(mut self, ip: IpAddr) -> Self {
        self.response_ip = Some(ip);
        self
    }

    /// Checks the values that would make the client misbehave.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Config { reason });
        if self.routing.is_empty() {
            return bad("no routing endpoint".into());
        }
        for r in &self.routing {
            if !r.starts_with("tcp://") || r.rsplit_once(':').is_none() {
                return bad(format!("routing endpoint `{r}` is not tcp://host:port"));
            }
        }
        if self.request_timeout.is_zero() || self.operation_timeout.is_zero() {
            return bad("timeouts must be positive".into());
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if let Some(ip) = self.response_ip {
            if ip.is_unspecified() {
                return bad(format!(
                    "response IP {ip} is unspecified: Anna could not connect back"
                ));
            }
        }
        Ok(())
    }
}

/// Splits `host[:port]`, understanding `[v6]:port` and bare IPv6.
pub(crate) fn split_host_port(s: &str) -> (String, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (format!("[{h}]"), port);
        }
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return (format!("[{s}]"), None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h.to_owned(), Some(port)),
            Err(_) => (s.to_owned(), None),
        },
        None => (s.to_owned(), None),
    }
}

/// Formats a well-formed `tcp://ip:port` address (IPv6 in brackets).
pub(crate) fn tcp_address(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("tcp://{v4}:{port}"),
        IpAddr::V6(v6) => format!("tcp://[{v6}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a"), ("a".into(), None));
        assert_eq!(split_host_port("a:1"), ("a".into(), Some(1)));
        assert_eq!(split_host_port("[::1]:2"), ("[::1]".into(), Some(2)));
        assert_eq!(split_host_port("::1"), ("[::1]".into(), None));
    }

    #[test]
    fn routing_threads_expand() {
        let c = ClientConfig::new("h:100").with_routing_threads(3);
        assert_eq!(c.routing, ["tcp://h:100", "tcp://h:101", "tcp://h:102"]);
    }

    #[test]
    fn validation() {
        assert!(ClientConfig::new("h").validate().is_ok());
        let mut c = ClientConfig::new("h");
        c.routing.clear();
        assert!(c.validate().is_err());
        let c = ClientConfig::new("h")
            .with_response_ip("0.0.0.0".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        assert!(c.validate().is_err());
    }
}
