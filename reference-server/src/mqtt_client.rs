//! How every MQTT client of the workspace opens its connection: the
//! gateway's connections to a broker, fleetsim's devices and the
//! benchmarks all call [`client`], so a socket option is set in one place.
//!
//! `TCP_NODELAY` on every connection: MQTT here is request and answer of a
//! few dozen bytes. With Nagle's algorithm on, a small packet written while
//! an earlier one is still unacknowledged waits for the peer's delayed ACK
//! (about 40 ms on Linux): two devices asking at the same instant, or a
//! PUBACK followed by an answer, cost the second one that wait.

use rumqttc::{AsyncClient, EventLoop, MqttOptions, NetworkOptions};

/// The socket options of every MQTT connection: `TCP_NODELAY`, and
/// rumqttc's default connect timeout (5 s).
pub fn network_options() -> NetworkOptions {
    let mut n = NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

/// A client and its event loop for `opts`, with [`network_options`];
/// `request_capacity` bounds the client's request channel.
pub fn client(opts: MqttOptions, request_capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(opts, request_capacity.max(1));
    eventloop.set_network_options(network_options());
    (client, eventloop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// `TCP_NODELAY` as the kernel holds it for socket `fd`.
    fn nodelay(fd: i32) -> Option<bool> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` outlive the call and `len` is `v`'s size.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(v != 0)
    }

    /// The file descriptor of this process's IPv4 socket bound to
    /// 127.0.0.1:`port` (the client's end of a connection).
    fn socket_bound_to(port: u16) -> Option<i32> {
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // SAFETY: a zeroed sockaddr_in is valid; getsockname writes at
            // most `len` bytes into it and fails on a non-socket fd.
            let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = unsafe {
                libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len)
            };
            if rc == 0
                && i32::from(addr.sin_family) == libc::AF_INET
                && u16::from_be(addr.sin_port) == port
            {
                return Some(fd);
            }
        }
        None
    }

    #[tokio::test]
    async fn every_connection_has_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_client, mut eventloop) = client(MqttOptions::new("probe", "127.0.0.1", port), 10);
        // The event loop connects on its first poll (and then waits for a
        // CONNACK this listener never sends).
        let poll = tokio::spawn(async move { eventloop.poll().await });
        let accepted = tokio::task::spawn_blocking(move || listener.accept().unwrap())
            .await
            .unwrap();
        let client_port = accepted.1.port();
        let fd = socket_bound_to(client_port).expect("the client's socket is in this process");
        assert_eq!(nodelay(fd), Some(true));

        // The probe can tell: a plain socket has Nagle on.
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let plain = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert_eq!(nodelay(plain.as_raw_fd()), Some(false));
        drop(accepted);
        poll.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), poll).await;
    }
}
