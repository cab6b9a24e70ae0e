//! `reference-server`: the reference access engine as a standalone server.
//! A thin binary: flags in, `server::run` out.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use reference_server::gateway::{self, BrokerChoice, BrokerUrl};
use reference_server::limits::DeviceLimits;
use reference_server::server::{self, Config};

/// The reference access engine: admin HTTP API, HTTP device validation,
/// durable SQLite store.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Data directory (database and token key); created if missing.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// HTTP listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// HTTP worker threads (default: one per CPU).
    #[arg(long)]
    http_workers: Option<usize>,
    /// PEM file of a private CA that webhook endpoints' HTTPS certificates
    /// may chain to, besides the bundled Mozilla roots.
    #[arg(long, value_name = "PATH")]
    webhook_ca_file: Option<PathBuf>,
    /// An external MQTT broker for the device gateway,
    /// `mqtt://engine:PASSWORD@host:port` (Mosquitto: docs/mosquitto/).
    /// Default: start the embedded broker.
    #[arg(long)]
    broker: Option<BrokerUrl>,
    /// Where the embedded broker listens (ignored with --broker); a taken
    /// port stops the server at once.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt_listen: SocketAddr,
    /// Messages one device may send per second, sustained; beyond, QoS 0
    /// messages are dropped and counted, QoS 1 ones wait.
    #[arg(long, default_value_t = DeviceLimits::default().rate_per_s)]
    device_rate_per_s: u32,
    /// Messages one device may send at once above its rate.
    #[arg(long, default_value_t = DeviceLimits::default().burst)]
    device_burst: u32,
    /// Checks and events of one device processed at once; more are dropped
    /// and counted.
    #[arg(long, default_value_t = DeviceLimits::default().in_flight)]
    device_in_flight: u32,
    /// Publish every lock to Home Assistant through the broker (MQTT
    /// discovery under --home-assistant-prefix, state, availability, and
    /// LOCK/UNLOCK/OPEN commands; docs/reference-server.md). With the
    /// embedded broker, Home Assistant logs in as `homeassistant` with the
    /// password in the environment variable HOME_ASSISTANT_PASSWORD
    /// (required then); with --broker, with that broker's own account.
    #[arg(long)]
    home_assistant: bool,
    /// Home Assistant's discovery prefix (with --home-assistant).
    #[arg(long, default_value = gateway::DISCOVERY_PREFIX)]
    home_assistant_prefix: String,
    /// Log lines on stderr: `text` (coloured only on a terminal) or `json`
    /// (one object a line, for log shippers). `RUST_LOG` sets the levels.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr. No escape codes unless stderr is a terminal: a file or
/// a log collector gets plain text.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,actix_server=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

/// Resolves on Ctrl-C or SIGTERM. SIGTERM is caught from the call on, so
/// one that comes during start-up still stops the server cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(args.log_format);
    let stop = shutdown_signal();
    let mut config = Config {
        data_dir: args.data_dir,
        http: args.http,
        webhook_ca_file: args.webhook_ca_file,
        ..Config::default()
    };
    if let Some(w) = args.http_workers {
        anyhow::ensure!(w >= 1, "--http-workers must be at least 1");
        config.http_workers = w;
    }
    let limits = DeviceLimits {
        rate_per_s: args.device_rate_per_s,
        burst: args.device_burst,
        in_flight: args.device_in_flight,
        ..DeviceLimits::default()
    };
    limits.validate()?;
    // Stopped below, once the signal came (caught from the start on).
    let server = server::run(config, std::future::pending()).await?;
    let choice = match args.broker {
        Some(url) => BrokerChoice::External(url),
        None => BrokerChoice::Embedded {
            listen: args.mqtt_listen,
        },
    };
    // Before saying where it listens: a taken MQTT port ends the server
    // here, with the address in the error.
    let embedded_password = match (&choice, args.home_assistant) {
        (BrokerChoice::Embedded { .. }, true) => match std::env::var("HOME_ASSISTANT_PASSWORD") {
            Ok(p) if !p.is_empty() => Some(p),
            _ => {
                anyhow::bail!("--home-assistant with the embedded broker needs HOME_ASSISTANT_PASSWORD: the password Home Assistant logs in with as `homeassistant`");
            }
        },
        _ => None,
    };
    let home_assistant = args.home_assistant.then(|| gateway::HomeAssistantConfig {
        discovery_prefix: args.home_assistant_prefix.clone(),
        embedded_password,
    });
    let mqtt = gateway::serve_with_limits(server.service.clone(), choice, limits, |cfg| {
        cfg.home_assistant = home_assistant;
    })
    .await?;
    println!("listening on {}", server.url());
    println!("devices connect to {}", mqtt.device_url);
    stop.await;
    // The gateway first (it disconnects from the broker and finishes the
    // checks it took), then HTTP and the store.
    mqtt.gateway.shutdown().await;
    server.stop().await;
    Ok(())
}
