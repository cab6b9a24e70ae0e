//! Starting and stopping the whole server: bind the HTTP listener (port 0
//! allowed) first, so a taken port ends the start at once, before a long
//! replay; open the data directory; serve until `shutdown` resolves, then
//! drain requests and commit the store. The binary and the tests both call
//! `run`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::service::{Clock, Service};
use crate::store::StoreError;

/// Server settings, with documented defaults (`Config::default()`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the database and the token key live. Default `./data`.
    pub data_dir: PathBuf,
    /// HTTP listen address. Default `127.0.0.1:8080`; port 0 picks a free port.
    pub http: SocketAddr,
    /// The server's clock. Default: the system clock. Tests set a manual one.
    pub clock: Clock,
    /// HTTP worker threads. Default: the number of CPUs.
    pub http_workers: usize,
    /// PEM certificates of a private CA that webhook endpoints' HTTPS
    /// certificates may chain to, besides the bundled Mozilla roots.
    /// Default: none.
    pub webhook_ca_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            clock: Clock::system(),
            http_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            webhook_ca_file: None,
        }
    }
}

/// Pending connections the HTTP listener queues (actix-web's default).
const HTTP_BACKLOG: u32 = 2_048;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory: {0}")]
    Store(#[from] StoreError),
    #[error("--webhook-ca-file {path}: {source}")]
    WebhookCaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--webhook-ca-file: {0}")]
    WebhookClient(#[from] crate::events::webhooks::ClientError),
    #[error("cannot listen for HTTP on {addr}: {source} (is another server running? choose another address with --http)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the HTTP listener. SO_REUSEADDR, as actix-web sets it: a restart
/// must not fail on the previous run's connections lingering in
/// TIME_WAIT. (It does not let two servers share a port.)
fn bind_http(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_BACKLOG)?.into_std()
}

/// A running server.
pub struct Server {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    http: actix_web::dev::ServerHandle,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The base URL, like `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops now (graceful: in-flight requests finish, the store commits).
    pub async fn stop(self) {
        // Open event streams never end by themselves: end them first.
        self.service.feed().stop_streams();
        self.http.stop(true).await;
        let _ = self.done.await;
    }

    /// Waits until the shutdown future given to `run` fired and the server
    /// has stopped.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Opens the data directory and serves until `shutdown` resolves. Must be
/// called inside a tokio runtime.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, StartError> {
    let bind_error = |source| StartError::Bind {
        addr: config.http,
        source,
    };
    // Before anything starts: a bad CA file ends the start with its path.
    let ca_pem = match &config.webhook_ca_file {
        Some(path) => Some(
            std::fs::read(path).map_err(|source| StartError::WebhookCaFile {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let webhook_client = crate::events::webhooks::client(ca_pem.as_deref())?;
    let listener = bind_http(config.http).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let dir = config.data_dir.clone();
    let clock = config.clock.clone();
    let service = tokio::task::spawn_blocking(move || Service::open(&dir, clock))
        .await
        .expect("opening the store does not panic")?;
    let service = Arc::new(service);
    crate::events::webhooks::start(service.clone(), webhook_client);
    let app_service = service.clone();
    let http = actix_web::HttpServer::new(move || crate::api::app(app_service.clone()))
        .workers(config.http_workers.max(1))
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)
        .map_err(bind_error)?;
    let http = http.run();
    let handle = http.handle();
    let stopper = handle.clone();
    let feed = service.clone();
    tokio::spawn(async move {
        shutdown.await;
        feed.feed().stop_streams();
        stopper.stop(true).await;
    });
    let svc = service.clone();
    let done = tokio::spawn(async move {
        if let Err(e) = http.await {
            tracing::error!(error = %e, "http server failed");
        }
        svc.close().await;
    });
    Ok(Server {
        addr,
        service,
        http: handle,
        done,
    })
}
