//! Credential checks over HTTP at a fixed arrival rate (an open model):
//! requests are due at `start + i / rate` whether or not earlier ones were
//! answered, and each latency is measured from its intended send time, so a
//! stalled server shows up in the percentiles (no coordinated omission).
//!
//! ```text
//! cargo run --release -p reference-server --example http_bench -- --rate 20000 --duration-s 10
//! cargo run --release -p reference-server --example http_bench -- --target http://127.0.0.1:8080 \
//!     --device 3 --secret DEVICE_SECRET --pin 4821
//! ```
//! Without `--target` it starts the server in-process on a temporary data
//! directory and provisions a site, a door phone and `--codes` PINs. The
//! client is a minimal HTTP/1.1 keep-alive client over `--connections`
//! connections (cheap per request, so the server is what is measured).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use reference_server::server::{self, Config};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Checks per second offered.
    #[arg(long, default_value_t = 20_000)]
    rate: u32,
    #[arg(long, default_value_t = 10)]
    duration_s: u32,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2)]
    warmup_s: u32,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// A running server; without it one is started in-process.
    #[arg(long)]
    target: Option<String>,
    /// With --target: the device, its secret and a PIN it accepts.
    #[arg(long)]
    device: Option<u32>,
    #[arg(long)]
    secret: Option<String>,
    #[arg(long)]
    pin: Option<String>,
    /// In-process: PINs provisioned (checks cycle through them).
    #[arg(long, default_value_t = 1000)]
    codes: usize,
    /// In-process: HTTP worker threads. One leaves the second core to the
    /// load generator and the store's writer on a 2-core machine.
    #[arg(long, default_value_t = 1)]
    http_workers: usize,
}

/// Most requests queued per connection before arrivals count as dropped.
const MAX_QUEUED_PER_CONNECTION: usize = 4_096;

async fn call(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut rb = client.post(url).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let resp = rb.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {v}");
    }
    Ok(v)
}

/// Provisions a site with a door phone and `codes` PINs; answers (device, secret, pins).
async fn provision(base: &str, codes: usize) -> anyhow::Result<(u32, String, Vec<String>)> {
    let c = reqwest::Client::new();
    let boot = call(
        &c,
        &format!("{base}/v1/bootstrap"),
        None,
        json!({"name": "Bench", "email": "bench@example.com", "organization": "Bench"}),
    )
    .await?;
    let org = boot["organization"].as_u64().context("organization")?;
    let t = boot["token"].as_str().context("token")?.to_string();
    let t = Some(t.as_str());
    let site = call(
        &c,
        &format!("{base}/v1/organizations/{org}/sites"),
        t,
        json!({"name": "Bench", "time_zone": "UTC", "settings": {"six_digit_pins": true}}),
    )
    .await?["site"]
        .as_u64()
        .context("site")?;
    let door = call(
        &c,
        &format!("{base}/v1/sites/{site}/doors"),
        t,
        json!({"name": "Entrance"}),
    )
    .await?["door"]
        .as_u64()
        .context("door")?;
    let dev = call(
        &c,
        &format!("{base}/v1/doors/{door}/devices"),
        t,
        json!({"kind": "door_phone", "name": "Phone"}),
    )
    .await?;
    let device = dev["device"].as_u64().context("device")? as u32;
    let secret = dev["mqtt"]["password"]
        .as_str()
        .context("secret")?
        .to_string();
    let holder = call(
        &c,
        &format!("{base}/v1/organizations/{org}/holders"),
        t,
        json!({"name": "Residents", "kind": "member"}),
    )
    .await?["holder"]
        .as_u64()
        .context("holder")?;
    let mut pins = Vec::with_capacity(codes);
    for i in 0..codes {
        let body = json!({"holder": holder, "name": format!("code {i}"), "secret": {"kind": "pin", "pin": {"type": "generate", "value": {"digits": 6}}}, "schedule": {"type": "permanent"}, "doors": [door]});
        let id = call(&c, &format!("{base}/v1/credentials"), t, body).await?["credential"]
            .as_u64()
            .context("credential")?;
        let pin = call(
            &c,
            &format!("{base}/v1/credentials/{id}/reveal"),
            t,
            json!({}),
        )
        .await?["pin"]
            .as_str()
            .context("pin")?
            .to_string();
        pins.push(pin);
    }
    Ok((device, secret, pins))
}

struct Totals {
    hist: Histogram<u64>,
    granted: u64,
    other: u64,
    errors: u64,
}

/// One keep-alive connection: sends each queued request in turn.
async fn connection(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    mut rx: tokio::sync::mpsc::Receiver<(Instant, usize, bool)>,
    totals: Arc<Mutex<Totals>>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    while let Some((intended, i, measured)) = rx.recv().await {
        stream.write_all(&requests[i % requests.len()]).await?;
        // Read one response: headers, then Content-Length bytes of body.
        let mut filled = 0;
        let (head_end, body_len) = loop {
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("server closed the connection");
            }
            filled += n;
            if let Some(p) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..p])?;
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .context("content-length")?;
                break (p + 4, len);
            }
        };
        while filled < head_end + body_len {
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("server closed the connection");
            }
            filled += n;
        }
        let latency_us = intended.elapsed().as_micros() as u64;
        if measured {
            let body = &buf[head_end..head_end + body_len];
            let ok = buf.starts_with(b"HTTP/1.1 200");
            let granted = ok && body.windows(9).any(|w| w == b"\"granted\"");
            let mut t = totals.lock();
            t.hist.record(latency_us.max(1)).ok();
            match (ok, granted) {
                (true, true) => t.granted += 1,
                (true, false) => t.other += 1,
                _ => t.errors += 1,
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _dir;
    let mut in_process: Option<server::Server> = None;
    let (base, device, secret, pins) = match &args.target {
        Some(t) => {
            let (Some(d), Some(s), Some(p)) = (args.device, args.secret.clone(), args.pin.clone())
            else {
                bail!("--target needs --device, --secret and --pin");
            };
            (t.trim_end_matches('/').to_string(), d, s, vec![p])
        }
        None => {
            _dir = tempfile::tempdir()?;
            let s = server::run(
                Config {
                    data_dir: _dir.path().to_path_buf(),
                    http: "127.0.0.1:0".parse()?,
                    http_workers: args.http_workers,
                    ..Config::default()
                },
                std::future::pending(),
            )
            .await?;
            let base = s.url();
            in_process = Some(s);
            let (d, sec, pins) = provision(&base, args.codes).await?;
            (base, d, sec, pins)
        }
    };
    let addr: SocketAddr = base
        .strip_prefix("http://")
        .context("--target must be http://host:port")?
        .parse()
        .context("--target must be http://IP:PORT")?;
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        pins.iter()
            .enumerate()
            .map(|(i, pin)| {
                let body = format!(r#"{{"id":{i},"credential":{{"type":"pin","value":"{pin}"}}}}"#);
                format!(
                    "POST /v1/devices/{device}/validate HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {secret}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            })
            .collect(),
    );
    let totals = Arc::new(Mutex::new(Totals {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        granted: 0,
        other: 0,
        errors: 0,
    }));
    let mut senders = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..args.connections {
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_QUEUED_PER_CONNECTION);
        senders.push(tx);
        conns.push(tokio::spawn(connection(
            addr,
            requests.clone(),
            rx,
            totals.clone(),
        )));
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let warmup = u64::from(args.warmup_s) * u64::from(args.rate);
    let total = warmup + u64::from(args.duration_s) * u64::from(args.rate);
    eprintln!(
        "offering {} checks/s for {}s (+{}s warm-up) over {} connections to {base}",
        args.rate, args.duration_s, args.warmup_s, args.connections
    );
    let start = Instant::now();
    let mut dropped = 0u64;
    let mut measure_start = start;
    let mut i = 0u64;
    while i < total {
        let now = Instant::now();
        // Send every request that is due (timers tick in milliseconds).
        while i < total {
            let intended = start + interval.mul_f64(i as f64);
            if intended > now {
                break;
            }
            if i == warmup {
                measure_start = intended;
            }
            let tx = &senders[(i as usize) % senders.len()];
            if tx.try_send((intended, i as usize, i >= warmup)).is_err() && i >= warmup {
                dropped += 1;
            }
            i += 1;
        }
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
    }
    drop(senders);
    for c in conns {
        if let Err(e) = c.await? {
            eprintln!("connection failed: {e}");
        }
    }
    let elapsed = measure_start.elapsed().as_secs_f64();
    let t = totals.lock();
    let done = t.hist.len();
    let pct = |q: f64| t.hist.value_at_quantile(q) as f64 / 1000.0;
    println!("offered_rate_per_s {}", args.rate);
    println!(
        "completed {done} (granted {}, other {}, errors {}), dropped_at_client {dropped}",
        t.granted, t.other, t.errors
    );
    println!("throughput_checks_per_s {:.0}", done as f64 / elapsed);
    println!(
        "latency_ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        t.hist.max() as f64 / 1000.0
    );
    if let Some(s) = &in_process {
        let m = s.service.metrics();
        let (n, sum) = (
            m.store_batch_size.get_sample_count(),
            m.store_batch_size.get_sample_sum(),
        );
        println!(
            "store: {n} commits, mean batch {:.1} jobs, mean commit {:.3} ms",
            sum / n.max(1) as f64,
            m.store_write_duration_seconds.get_sample_sum() * 1000.0
                / m.store_write_duration_seconds.get_sample_count().max(1) as f64
        );
    }
    Ok(())
}
