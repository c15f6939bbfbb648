//! Free TCP ports on loopback addresses, for servers the kit starts.
//!
//! A port found free can be taken by another process before the server
//! binds it; the servers here bind within milliseconds, and a clash shows
//! as a start-up failure that names the port.

use std::net::TcpListener;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        if let Ok(port) = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            return port.port();
        }
    }
    panic!("no free TCP port on 127.0.0.1");
}

/// A free port whose `port + 10000` is free too (a Redis Cluster node's bus).
pub fn free_port_with_bus() -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port (and bus port) on 127.0.0.1");
}

/// A port free on every address in `addresses` (the peer port every node
/// of a local cluster binds on its own `127.0.0.X`).
pub fn free_port_on_all<S: AsRef<str>>(addresses: &[S]) -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if addresses
            .iter()
            .all(|a| TcpListener::bind((a.as_ref(), port)).is_ok())
        {
            return port;
        }
    }
    panic!("no TCP port is free on every one of the addresses");
}

/// `count` distinct free ports on 127.0.0.1.
pub fn free_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    while ports.len() < count {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}
