//! A tiny HTTP/1.1 server for `/metrics` (Prometheus text format).
//!
//! Just enough HTTP for a scraper: one request per connection, a bounded
//! request head, a bounded number of connections, `Connection: close`.
//! It runs on the caller's tokio runtime and stops on [`MetricsExporter::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::FleetMetrics;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request head larger than this is refused (a scrape needs ~100 bytes).
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Scrapes served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running `/metrics` endpoint.
pub struct MetricsExporter {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MetricsExporter {
    /// Listens on `addr` (port 0 picks a free port) and serves `metrics`.
    pub async fn start(
        addr: SocketAddr,
        metrics: Arc<FleetMetrics>,
    ) -> Result<MetricsExporter, ExporterError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ExporterError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ExporterError::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, metrics, stopped));
        Ok(MetricsExporter {
            local_addr,
            stop,
            task,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends open connections and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn serve(
    listener: TcpListener,
    metrics: Arc<FleetMetrics>,
    mut stopped: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let metrics = metrics.clone();
                conns.spawn(async move {
                    let _ = handle(stream, &metrics).await;
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn handle(mut stream: TcpStream, metrics: &FleetMetrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD_BYTES {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )
            .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => {
            let body = metrics.encode_text();
            respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes()).await
        }
        (_, b"/metrics") => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                b"use GET\n",
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"see /metrics\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
