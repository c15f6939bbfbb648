//! A user-space TCP delay proxy: simulates a network hop between a client
//! and a server on this machine (there is no `tc netem` in this kernel).
//!
//! Each direction of each connection has a reader thread and a writer
//! thread. The reader stamps every chunk it reads with a deadline
//! (`now + delay`) and queues it; the writer sends each chunk at its
//! deadline. So the delay is a latency, not a bandwidth limit: pipelined
//! requests overlap as they would on a real link. Waiting is precise:
//! the writer sleeps (with a 1 ns timer slack) until shortly before the
//! deadline, then spins (tokio's timer has 1 ms resolution, far too coarse).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, Sender};

/// Settings of the delay proxy.
#[derive(Debug, Clone, Copy)]
pub struct ProxyConfig {
    /// Delay added in each direction.
    pub delay: Duration,
    /// How long before a deadline the writer stops sleeping and spins.
    pub spin: Duration,
}

/// Lowers this thread's timer slack to 1 ns, so sleeps end when asked
/// (the default slack of 50 µs would blur a 250 µs delay).
pub fn precise_timers_for_this_thread() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes a scheduling attribute
    // of the calling thread; it takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Waits until `deadline`: sleeps until `spin` before it, then spins.
pub fn wait_until(deadline: Instant, spin: Duration) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > spin {
            std::thread::sleep(left - spin);
        } else {
            std::hint::spin_loop();
        }
    }
}

enum Chunk {
    Data(Instant, Vec<u8>),
    Closed(Instant),
}

/// Listens on `listener` and forwards every connection to `target` with
/// the configured delay, forever (the process is killed when done).
pub fn serve(listener: TcpListener, target: SocketAddr, config: ProxyConfig) -> anyhow::Result<()> {
    for incoming in listener.incoming() {
        let client = match incoming {
            Ok(c) => c,
            Err(e) => {
                eprintln!("delay-proxy: accept failed: {e}");
                continue;
            }
        };
        let server = match TcpStream::connect(target) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("delay-proxy: cannot connect to {target}: {e}");
                continue;
            }
        };
        if let Err(e) = start_connection(client, server, config) {
            eprintln!("delay-proxy: cannot start forwarding: {e:#}");
        }
    }
    Ok(())
}

fn start_connection(
    client: TcpStream,
    server: TcpStream,
    config: ProxyConfig,
) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    pipe(client.try_clone()?, server.try_clone()?, config)?;
    pipe(server, client, config)?;
    Ok(())
}

/// Forwards `from` -> `to` with the delay (two threads).
fn pipe(from: TcpStream, to: TcpStream, config: ProxyConfig) -> anyhow::Result<()> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("proxy-read".into())
        .spawn(move || read_side(from, tx, config.delay))
        .context("cannot spawn a proxy thread")?;
    std::thread::Builder::new()
        .name("proxy-write".into())
        .spawn(move || write_side(to, rx, config.spin))
        .context("cannot spawn a proxy thread")?;
    Ok(())
}

fn read_side(mut from: TcpStream, tx: Sender<Chunk>, delay: Duration) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Chunk::Closed(Instant::now() + delay));
                return;
            }
            Ok(n) => {
                let deadline = Instant::now() + delay;
                if tx.send(Chunk::Data(deadline, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
}

fn write_side(mut to: TcpStream, rx: Receiver<Chunk>, spin: Duration) {
    precise_timers_for_this_thread();
    while let Ok(chunk) = rx.recv() {
        match chunk {
            Chunk::Data(deadline, data) => {
                wait_until(deadline, spin);
                if to.write_all(&data).is_err() {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            Chunk::Closed(deadline) => {
                wait_until(deadline, spin);
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_precise() {
        precise_timers_for_this_thread();
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let deadline = Instant::now() + Duration::from_micros(250);
            wait_until(deadline, Duration::from_micros(50));
            worst = worst.max(Instant::now() - deadline);
        }
        // Generous: a loaded 2-core CI machine can preempt the spinner.
        assert!(worst < Duration::from_millis(20), "overshoot {worst:?}");
    }

    #[test]
    fn forwards_bytes_both_ways_with_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = echo.accept() {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").expect("bind");
        let proxy_addr = proxy.local_addr().expect("addr");
        let config = ProxyConfig {
            delay: Duration::from_millis(2),
            spin: Duration::from_micros(50),
        };
        std::thread::spawn(move || serve(proxy, echo_addr, config));
        let mut c = TcpStream::connect(proxy_addr).expect("connect");
        let started = Instant::now();
        c.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
        assert!(started.elapsed() >= Duration::from_millis(4));
    }
}
