//! A TCP relay between the devices and the MQTT broker, to take the broker
//! away from them (the `broker_outage` fault) whatever broker it is
//! (the embedded broker or `--broker`), while the engine's gateway keeps its
//! own connection.
//!
//! During an outage ([`Relay::cut`] until [`Relay::restore`]) every relayed
//! connection is dropped and new ones are closed as soon as accepted, so
//! the devices see what a dead broker looks like and reconnect with their
//! own backoff once it is back. Both sockets set TCP_NODELAY: the relay
//! must not add Nagle delays to small MQTT packets.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running relay; dropping it stops accepting (relayed connections end
/// at the next outage or when either side closes).
pub struct Relay {
    addr: SocketAddr,
    /// `true` while the broker is "down".
    down: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on `listen` (port 0: a free one) and relays to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (down, _) = watch::channel(false);
        let down = Arc::new(down);
        let accept = tokio::spawn(accept_loop(listener, upstream, down.clone()));
        Ok(Relay { addr, down, accept })
    }

    /// Where the devices connect instead of the broker.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts an outage: drops every relayed connection, refuses new ones.
    pub fn cut(&self) {
        self.down.send_replace(true);
    }

    /// Ends the outage.
    pub fn restore(&self) {
        self.down.send_replace(false);
    }

    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        // Ends the relayed connections too.
        self.down.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, down: Arc<watch::Sender<bool>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        if *down.borrow() {
            drop(client);
            continue;
        }
        tokio::spawn(relay_one(client, upstream, down.subscribe()));
    }
}

async fn relay_one(mut client: TcpStream, upstream: SocketAddr, mut down: watch::Receiver<bool>) {
    let Ok(mut broker) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
        // Dropping both streams closes them: the device's connection breaks.
        _ = down.wait_for(|d| *d) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_and_cuts_connections_during_an_outage() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), echo_addr)
            .await
            .unwrap();
        let mut c = TcpStream::connect(relay.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        relay.cut();
        assert!(relay.is_down());
        // The relayed connection ends (EOF or reset), and so does a new one.
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        let mut c2 = TcpStream::connect(relay.addr()).await.unwrap();
        let _ = c2.write_all(b"x").await;
        assert_eq!(c2.read(&mut buf).await.unwrap_or(0), 0);

        relay.restore();
        let mut c3 = TcpStream::connect(relay.addr()).await.unwrap();
        c3.write_all(b"back").await.unwrap();
        c3.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
    }
}
