//! Validation of the reply addresses clients put in their requests.
//!
//! A reply address decides where the sidecar connects a socket, so it is
//! checked before use: `ipc://` paths must lie inside the IPC directory (as
//! the client sees it, `client_ipc_dir`, mapped to the sidecar's own
//! `ipc_dir` when the two differ, e.g. `/requests` inside executor
//! containers); `tcp://` is refused unless explicitly allowed.

/// Longest reply address accepted.
pub const MAX_ADDRESS_LEN: usize = 256;

/// Rules for reply addresses.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    /// The directory the sidecar binds in.
    pub ipc_dir: String,
    /// The same directory as clients name it (e.g. `/requests`).
    pub client_ipc_dir: String,
    /// Whether `tcp://host:port` reply addresses are accepted.
    pub allow_tcp: bool,
}

/// Why a reply address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Empty.
    #[error("empty reply address")]
    Empty,
    /// Too long.
    #[error("reply address longer than {MAX_ADDRESS_LEN} bytes")]
    TooLong,
    /// Not `ipc://` (or `tcp://` where allowed).
    #[error("reply address `{0}` has an unsupported transport")]
    Transport(String),
    /// An `ipc://` path outside the IPC directory.
    #[error("reply address `{0}` is outside the IPC directory")]
    OutsideDirectory(String),
    /// A malformed `tcp://` address.
    #[error("reply address `{0}` is not tcp://host:port")]
    BadTcp(String),
}

impl AddressPolicy {
    /// The address to connect to for a client-supplied reply address.
    pub fn resolve(&self, address: &str) -> Result<String, AddressError> {
        if address.is_empty() {
            return Err(AddressError::Empty);
        }
        if address.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        if let Some(path) = address.strip_prefix("ipc://") {
            return self.resolve_ipc(address, path);
        }
        if let Some(hostport) = address.strip_prefix("tcp://") {
            if !self.allow_tcp {
                return Err(AddressError::Transport(address.to_string()));
            }
            let valid = hostport.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            return if valid {
                Ok(address.to_string())
            } else {
                Err(AddressError::BadTcp(address.to_string()))
            };
        }
        Err(AddressError::Transport(address.to_string()))
    }

    fn resolve_ipc(&self, address: &str, path: &str) -> Result<String, AddressError> {
        let outside = || AddressError::OutsideDirectory(address.to_string());
        // Plain string checks (this runs for every request): no `..`
        // segment anywhere, then a non-empty name under one of the two
        // directory spellings.
        if path.split('/').any(|segment| segment == "..") {
            return Err(outside());
        }
        let under = |dir: &str| {
            path.strip_prefix(dir.trim_end_matches('/'))
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|name| !name.is_empty())
        };
        if under(&self.ipc_dir).is_some() {
            return Ok(address.to_string());
        }
        match under(&self.client_ipc_dir) {
            Some(name) => Ok(format!(
                "ipc://{}/{name}",
                self.ipc_dir.trim_end_matches('/')
            )),
            None => Err(outside()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_tcp: bool) -> AddressPolicy {
        AddressPolicy {
            ipc_dir: "/tmp/aft".into(),
            client_ipc_dir: "/requests".into(),
            allow_tcp,
        }
    }

    #[test]
    fn accepts_and_maps_addresses_inside_the_directory() {
        let p = policy(false);
        assert_eq!(
            p.resolve("ipc:///tmp/aft/get_0").unwrap(),
            "ipc:///tmp/aft/get_0"
        );
        assert_eq!(
            p.resolve("ipc:///requests/get_0").unwrap(),
            "ipc:///tmp/aft/get_0"
        );
    }

    #[test]
    fn refuses_bogus_addresses() {
        let p = policy(false);
        for bad in [
            "",
            "get_0",
            "http://x",
            "ipc:///etc/passwd",
            "ipc:///tmp/aft/../../etc/x",
            "ipc:///tmp/aft",
            "ipc:///tmp/aftx/get_0",
            "tcp://127.0.0.1:5000",
        ] {
            assert!(p.resolve(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            p.resolve(&"ipc:///tmp/aft/".repeat(30)),
            Err(AddressError::TooLong)
        );
    }

    #[test]
    fn tcp_only_when_allowed_and_well_formed() {
        let p = policy(true);
        assert!(p.resolve("tcp://127.0.0.1:5000").is_ok());
        assert!(p.resolve("tcp://127.0.0.1").is_err());
        assert!(p.resolve("tcp://:5000").is_err());
        assert!(p.resolve("tcp://h:0").is_err());
    }
}
