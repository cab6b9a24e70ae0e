//! Credential checks over MQTT: round trips per second and latency with N
//! connected devices, through the embedded broker or a Mosquitto this
//! program starts (with the fleet ACL and a password file).
//!
//! Open model: checks are scheduled at a fixed total rate, round-robin over
//! the devices, whatever the answers do; latency is measured from each
//! check's *intended* send time (no coordinated omission), so a stall shows
//! up in the percentiles instead of slowing the load down.
//!
//! ```text
//! cargo run --release -p reference-server --example mqtt_bench -- \
//!     --broker mosquitto --devices 1000 --rate 10000 --duration-s 20
//! ```
//!
//! The server (service + gateway) and the devices run in this process on
//! separate runtimes whose threads are named `server-*` and `devices-*`;
//! the report splits CPU time by thread group (and Mosquitto's process).
//!
//! `--flood-s N` adds one more device that floods its own `auth/req` at
//! QoS 0 from a raw socket (as fast as the socket takes it, from the start
//! of the measured window, for N seconds; `--flood-kind garbage` sends
//! bytes that are not JSON), to show what one device can do to the others:
//! the report then adds the flood's size and the process's memory (RSS
//! sampled every 100 ms: the server and the simulated devices together).
//!
//! ```text
//! cargo run --release -p reference-server --example mqtt_bench -- \
//!     --broker embedded --devices 100 --rate 1000 --duration-s 30 --flood-s 30
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use reference_server::domain::*;
use reference_server::engine::{Command, Issue, Outcome, PinSpec, SecretSpec};
use reference_server::gateway::{self, BrokerChoice};
use reference_server::protocol::{
    self, AuthRequest, AuthResponse, Channel, Verdict, WireCredential,
};
use reference_server::service::{Clock, Service};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum BrokerKind {
    Embedded,
    Mosquitto,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum, default_value = "embedded")]
    broker: BrokerKind,
    /// Connected devices (one MQTT connection each).
    #[arg(long, default_value_t = 1000)]
    devices: u32,
    /// Target checks per second, all devices together.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Measured time.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Load before measuring (not recorded).
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Gateway connections to the broker.
    #[arg(long, default_value_t = 1)]
    gateway_connections: usize,
    /// Worker threads of the server runtime and of the devices' runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// One more device floods its own auth/req for this long (0: none).
    #[arg(long, default_value_t = 0)]
    flood_s: u64,
    /// What the flooding device sends.
    #[arg(long, value_enum, default_value = "auth")]
    flood_kind: FloodKind,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum FloodKind {
    /// Valid PIN checks (each one checked, answered and logged if let in).
    Auth,
    /// Payloads that are not JSON.
    Garbage,
}

const PIN: &str = "482916";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.devices == 0 || args.rate == 0 {
        bail!("--devices and --rate must be at least 1");
    }
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("server")
        .enable_all()
        .build()?;
    let device_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("devices")
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let flooding = args.flood_s > 0;
    let (service, site, mut devices) =
        server_rt.block_on(provision(dir.path(), args.devices + u32::from(flooding)))?;
    // The flooder is provisioned like the others but takes no part in the
    // measured load.
    let flooder = if flooding { devices.pop() } else { None };
    let flooder_id = flooder.as_ref().map(|(id, _)| *id);
    let mut mosquitto = None;
    let choice = match args.broker {
        BrokerKind::Embedded => BrokerChoice::Embedded {
            listen: "127.0.0.1:0".parse()?,
        },
        BrokerKind::Mosquitto => {
            // The flooder logs in too: Mosquitto must know it.
            let everyone: Vec<(DeviceId, String)> =
                devices.iter().chain(flooder.iter()).cloned().collect();
            let (child, url) = start_mosquitto(dir.path(), &everyone)?;
            mosquitto = Some(child);
            BrokerChoice::External(url.parse()?)
        }
    };
    let conns = args.gateway_connections;
    let mqtt = server_rt.block_on(gateway::serve(service.clone(), choice, move |cfg| {
        cfg.connections = conns
    }))?;
    let port: u16 = mqtt.device_url.rsplit(':').next().unwrap().parse()?;
    eprintln!(
        "broker {:?} at {}; connecting {} devices",
        args.broker, mqtt.device_url, args.devices
    );
    let mosquitto_pid = mosquitto.as_ref().map(|c| c.id());
    let svc = service.clone();
    // Checks start once every lock has confirmed the code: a check at a lock
    // still syncing is (rightly) denied and would skew the figures. The
    // flooder never acks a sync: its copy does not count.
    let all_set = move || {
        let e = svc.engine();
        e.credentials().iter().all(|c| {
            c.placements
                .iter()
                .all(|p| p.state == SyncState::Set || Some(p.device) == flooder_id)
        })
    };
    let rss = RssSampler::start();
    let flood = flooder.map(|(id, secret)| Flood {
        port,
        topic: protocol::topic("fleet", site, id, Channel::AuthReq),
        user: id.to_string(),
        secret,
        kind: args.flood_kind,
        duration: Duration::from_secs(args.flood_s),
    });
    let result = device_rt.block_on(run_load(
        &args,
        port,
        site,
        &devices,
        mosquitto_pid,
        all_set,
        flood,
        &rss,
    ));
    let report = result?;
    report.print(&args);
    rss.print();
    if let Some(mut c) = mosquitto {
        let _ = c.kill();
        let _ = c.wait();
    }
    let m = mqtt.gateway.metrics();
    eprintln!(
        "gateway: answered granted={} denied={} error={}",
        m.answered(Verdict::Granted),
        m.answered(Verdict::Denied),
        m.answered(Verdict::Error),
    );
    let dropped: Vec<String> = gateway::DropReason::ALL
        .iter()
        .filter(|r| m.dropped(**r) > 0)
        .map(|r| format!("{}={}", r.as_str(), m.dropped(*r)))
        .collect();
    eprintln!("gateway: dropped {}", dropped.join(" "));
    drop(server_rt);
    Ok(())
}

/// One site, one door per 50 locks, one PIN on every door.
async fn provision(
    dir: &std::path::Path,
    n: u32,
) -> anyhow::Result<(Arc<Service>, SiteId, Vec<(DeviceId, String)>)> {
    let service = Arc::new(Service::open(dir, Clock::system())?);
    let boot = service
        .bootstrap("Bench".into(), "bench@example.com".into(), "Bench".into())
        .await?;
    let owner = Actor::User(boot.user);
    let made = |cmd| {
        let s = service.clone();
        async move { s.apply(&owner, cmd).await.map(|a| a.outcome) }
    };
    let Outcome::Site(site) = made(Command::CreateSite {
        org: boot.org,
        name: "Bench".into(),
        time_zone: "UTC".into(),
        settings: SiteSettings {
            six_digit_pins: true,
            ..SiteSettings::default()
        },
    })
    .await?
    else {
        bail!("no site")
    };
    let Outcome::Holder(holder) = made(Command::CreateHolder {
        org: boot.org,
        name: "Bench holder".into(),
        kind: HolderKind::Member,
        user: None,
        floors: FloorScope::Any,
    })
    .await?
    else {
        bail!("no holder")
    };
    let mut devices = Vec::new();
    let mut doors = Vec::new();
    for d in 0..n.div_ceil(50) {
        let Outcome::Door(door) = made(Command::CreateDoor {
            site,
            name: format!("Door {d}"),
            common_area: false,
            unit: None,
            lift_floors: vec![],
        })
        .await?
        else {
            bail!("no door")
        };
        doors.push(door);
    }
    let made_devices = futures::future::join_all((0..n).map(|i| {
        let s = service.clone();
        let door = doors[(i / 50) as usize];
        async move {
            s.create_device(
                &owner,
                Command::CreateDevice {
                    door,
                    kind: DeviceKind::Lock,
                    connectivity: Connectivity::Wifi,
                    name: format!("Lock {i}"),
                    location: "Bench".into(),
                    linked_to: None,
                    code_slots: 250,
                },
            )
            .await
        }
    }))
    .await;
    for d in made_devices {
        devices.push(d?);
    }
    made(Command::IssueCredential(Issue {
        holder,
        name: "Bench code".into(),
        secret: SecretSpec::Pin {
            pin: PinSpec::Manual(PIN.into()),
        },
        schedule: Schedule::Permanent,
        doors: doors.clone(),
        include_common_areas: false,
        floors: FloorScope::Any,
    }))
    .await?;
    Ok((service, site, devices))
}

fn start_mosquitto(
    dir: &std::path::Path,
    devices: &[(DeviceId, String)],
) -> anyhow::Result<(std::process::Child, String)> {
    let passwd = dir.join("passwd");
    let engine_pw = "bench-engine-password";
    let mut lines = format!("engine:{engine_pw}\n");
    for (d, s) in devices {
        lines.push_str(&format!("{d}:{s}\n"));
    }
    std::fs::write(&passwd, lines)?;
    let st = std::process::Command::new("mosquitto_passwd")
        .arg("-U")
        .arg(&passwd)
        .status()
        .context("mosquitto_passwd (apt-get install mosquitto)")?;
    if !st.success() {
        bail!("mosquitto_passwd -U failed");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let acl = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/mosquitto/acl");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {acl}\n\
             use_username_as_clientid true\nmax_inflight_messages 1000\nmax_queued_messages 100000\n\
             persistence false\nlog_type error\nlog_type warning\nlog_dest stderr\n",
            passwd.display()
        ),
    )?;
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .spawn()
        .context("start mosquitto")?;
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("mosquitto did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, format!("mqtt://engine:{engine_pw}@127.0.0.1:{port}")))
}

struct Shared {
    start: Instant,
    interval_ns: u64,
    /// Ids below this were sent during warm-up and are not recorded.
    first_measured: u64,
    hist: Mutex<Histogram<u64>>,
    answered: AtomicU64,
    not_granted: AtomicU64,
}

struct Report {
    sent: u64,
    answered: u64,
    not_granted: u64,
    elapsed_s: f64,
    hist: Histogram<u64>,
    cpu: BTreeMap<String, f64>,
    wall_s: f64,
}

#[allow(clippy::too_many_arguments)]
async fn run_load(
    args: &Args,
    port: u16,
    site: SiteId,
    devices: &[(DeviceId, String)],
    mosquitto_pid: Option<u32>,
    all_set: impl Fn() -> bool,
    flood: Option<Flood>,
    rss: &RssSampler,
) -> anyhow::Result<Report> {
    let mut flood = flood;
    let interval_ns = 1_000_000_000 / args.rate;
    let warmup = args.warmup_s * args.rate;
    let total = warmup + args.duration_s * args.rate;
    // Connect every device (its own connection and event loop task).
    let mut clients = Vec::with_capacity(devices.len());
    let mut connected = Vec::new();
    for (id, secret) in devices {
        let mut opts = MqttOptions::new(id.to_string(), "127.0.0.1", port);
        opts.set_credentials(id.to_string(), secret.clone())
            .set_keep_alive(Duration::from_secs(60))
            .set_request_channel_capacity(1000)
            .set_inflight(1000);
        let (client, eventloop) = reference_server::mqtt_client::client(opts, 1000);
        let resp = protocol::topic("fleet", site, *id, Channel::AuthResp);
        let sync = protocol::topic("fleet", site, *id, Channel::Sync);
        client.subscribe(resp, QoS::AtMostOnce).await?;
        client.subscribe(sync, QoS::AtLeastOnce).await?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        connected.push(ready_rx);
        tokio::spawn(device_loop(
            eventloop,
            client.clone(),
            protocol::topic("fleet", site, *id, Channel::SyncAck),
            ready_tx,
        ));
        clients.push((
            client,
            protocol::topic("fleet", site, *id, Channel::AuthReq),
        ));
    }
    for r in connected {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .context("a device did not connect")??;
    }
    // Online (and so synced): the status after the subscriptions.
    for ((client, _), (id, _)) in clients.iter().zip(devices) {
        let st = protocol::Status {
            online: true,
            battery_pct: Some(90),
            firmware: None,
            at: None,
        };
        client
            .publish(
                protocol::topic("fleet", site, *id, Channel::Status),
                QoS::AtLeastOnce,
                true,
                protocol::encode(&st),
            )
            .await?;
    }
    let synced = Instant::now();
    while !all_set() {
        if synced.elapsed() > Duration::from_secs(120) {
            bail!("the devices did not confirm the code within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} devices online, code set on all after {:.1}s; load {} checks/s",
        devices.len(),
        synced.elapsed().as_secs_f64(),
        args.rate
    );

    let start = Instant::now() + Duration::from_millis(100);
    // `start` is fixed before the first send, so every device computes the
    // same intended times.
    let shared = Arc::new(Shared {
        start,
        interval_ns,
        first_measured: warmup,
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        answered: AtomicU64::new(0),
        not_granted: AtomicU64::new(0),
    });
    SHARED.lock().replace(shared.clone());
    let mut cpu_before = None;
    let mut measured_from = start;
    let mut next: u64 = 0;
    while next < total {
        let now = Instant::now();
        // Send everything due by now (timers tick in milliseconds).
        while next < total && start + Duration::from_nanos(next * interval_ns) <= now {
            if next == warmup {
                cpu_before = Some(cpu_times(mosquitto_pid));
                measured_from = Instant::now();
                rss.mark("measured window starts");
                if let Some(f) = flood.take() {
                    f.start(rss.clone());
                }
            }
            let (client, topic) = &clients[(next % clients.len() as u64) as usize];
            let req = AuthRequest {
                id: next,
                credential: WireCredential::Pin(PIN.into()),
                floor: None,
                at: None,
            };
            // A full request channel is a lost check: it shows as unanswered.
            let _ = client.try_publish(topic, QoS::AtMostOnce, false, protocol::encode(&req));
            next += 1;
        }
        let due = start + Duration::from_nanos(next * interval_ns);
        tokio::time::sleep_until(due).await;
    }
    let sent_end = Instant::now();
    // Let the last answers arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_after = cpu_times(mosquitto_pid);
    let wall_s = (Instant::now() - measured_from).as_secs_f64();
    let mut cpu = BTreeMap::new();
    if let Some(before) = cpu_before {
        for (k, v) in &cpu_after {
            cpu.insert(k.clone(), v - before.get(k).copied().unwrap_or(0.0));
        }
    }
    let hist = shared.hist.lock().clone();
    Ok(Report {
        sent: total - warmup,
        answered: shared.answered.load(Ordering::Relaxed),
        not_granted: shared.not_granted.load(Ordering::Relaxed),
        elapsed_s: (sent_end - measured_from).as_secs_f64(),
        hist,
        cpu,
        wall_s,
    })
}

/// The measurement state the device loops read (set once the load starts).
static SHARED: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

async fn device_loop(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    sync_ack: String,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut shared: Option<Arc<Shared>> = None;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic.ends_with("/sync") {
                    // Apply and ack, as a lock would.
                    if let Ok(push) = protocol::decode::<protocol::SyncPush>(&p.payload) {
                        let ack = protocol::SyncAckMsg {
                            version: push.version,
                            results: push
                                .credentials()
                                .map(|credential| protocol::SyncResult {
                                    credential,
                                    failure: None,
                                })
                                .collect(),
                        };
                        let _ = client.try_publish(
                            sync_ack.as_str(),
                            QoS::AtLeastOnce,
                            false,
                            protocol::encode(&ack),
                        );
                    }
                    continue;
                }
                let now = Instant::now();
                if shared.is_none() {
                    shared = SHARED.lock().clone();
                }
                let Some(s) = &shared else { continue };
                let Ok(resp) = protocol::decode::<AuthResponse>(&p.payload) else {
                    continue;
                };
                if resp.id < s.first_measured {
                    continue;
                }
                let intended = s.start + Duration::from_nanos(resp.id * s.interval_ns);
                let latency_us = now.saturating_duration_since(intended).as_micros() as u64;
                s.hist.lock().saturating_record(latency_us.max(1));
                s.answered.fetch_add(1, Ordering::Relaxed);
                if resp.decision != Verdict::Granted
                    && s.not_granted.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("first answer not granted: {resp:?}");
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// CPU seconds so far of this process's threads, grouped by thread name
/// (digits stripped: `server-3` and `server-7` are `server`).
fn cpu_times(mosquitto_pid: Option<u32>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let tick = 100.0; // USER_HZ on Linux
    if let Some(pid) = mosquitto_pid {
        if let Some(s) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| proc_cpu_s(&s, tick))
        {
            out.insert("mosquitto (process)".to_string(), s);
        }
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let name: String = comm
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        if let Some(s) = std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| proc_cpu_s(&s, tick))
        {
            *out.entry(name).or_insert(0.0) += s;
        }
    }
    out
}

fn proc_cpu_s(stat: &str, tick: f64) -> Option<f64> {
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / tick)
}

impl Report {
    fn print(&self, args: &Args) {
        let h = &self.hist;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!("mqtt_bench: broker={:?} devices={} target_rate={}/s model=open (fixed schedule, latency from intended send time)",
            args.broker, args.devices, args.rate);
        println!(
            "  sent={} answered={} unanswered={} not_granted={} achieved={:.0} checks/s over {:.1}s",
            self.sent,
            self.answered,
            self.sent.saturating_sub(self.answered),
            self.not_granted,
            self.answered as f64 / self.elapsed_s.max(1e-9),
            self.elapsed_s
        );
        println!(
            "  latency_ms p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
        println!("  cpu over {:.1}s wall (1.0 = one core busy):", self.wall_s);
        for (k, v) in &self.cpu {
            if *v > 0.05 {
                println!("    {k:<20} {:.2}", v / self.wall_s);
            }
        }
    }
}

/// One device flooding its own auth/req at QoS 0 from a raw socket.
struct Flood {
    port: u16,
    topic: String,
    user: String,
    secret: String,
    kind: FloodKind,
    duration: Duration,
}

/// An MQTT string: length, then the bytes.
fn mqtt_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A packet: first byte, remaining length, body.
fn mqtt_packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

impl Flood {
    /// Starts the flood on its own threads (a writer and a reader that
    /// discards what comes back); it ends by itself after `duration`.
    fn start(self, rss: RssSampler) {
        std::thread::Builder::new()
            .name("flooder".into())
            .spawn(move || {
                if let Err(e) = self.run(&rss) {
                    eprintln!("flood: {e}");
                }
            })
            .expect("flood thread");
    }

    fn run(&self, rss: &RssSampler) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        sock.set_nodelay(true)?;
        let mut body = Vec::new();
        mqtt_str(&mut body, b"MQTT");
        // Level 4 (3.1.1); flags: username, password, clean session.
        body.extend_from_slice(&[4, 0xC2, 0, 60]);
        mqtt_str(&mut body, self.user.as_bytes());
        mqtt_str(&mut body, self.user.as_bytes());
        mqtt_str(&mut body, self.secret.as_bytes());
        sock.write_all(&mqtt_packet(0x10, &body))?;
        let mut reader = sock.try_clone()?;
        let received = Arc::new(AtomicU64::new(0));
        let got = received.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        // A batch of publishes written at once, over and over.
        let mut batch = Vec::new();
        let mut per_batch = 0u64;
        while batch.len() < 64 * 1024 {
            let payload: Vec<u8> = match self.kind {
                FloodKind::Auth => {
                    format!(r#"{{"id":{per_batch},"credential":{{"type":"pin","value":"{PIN}"}}}}"#)
                        .into_bytes()
                }
                FloodKind::Garbage => b"\x00garbage, not json \xff".to_vec(),
            };
            let mut body = Vec::new();
            mqtt_str(&mut body, self.topic.as_bytes());
            body.extend_from_slice(&payload);
            batch.extend_from_slice(&mqtt_packet(0x30, &body));
            per_batch += 1;
        }
        rss.mark("flood starts");
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < self.duration {
            if sock.write_all(&batch).is_err() {
                break;
            }
            sent += per_batch;
        }
        let secs = started.elapsed().as_secs_f64();
        rss.mark("flood ends");
        eprintln!(
            "flood: {:?} from {} for {secs:.1}s: {sent} messages written ({:.0}/s), {} bytes came back",
            self.kind,
            self.user,
            sent as f64 / secs,
            received.load(Ordering::Relaxed)
        );
        let _ = sock.shutdown(std::net::Shutdown::Both);
        Ok(())
    }
}

/// The process's resident memory, sampled every 100 ms.
#[derive(Clone)]
struct RssSampler {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    marks: Arc<Mutex<Vec<(f64, String)>>>,
    t0: std::time::Instant,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl RssSampler {
    fn start() -> RssSampler {
        let s = RssSampler {
            samples: Arc::default(),
            marks: Arc::default(),
            t0: std::time::Instant::now(),
        };
        let samples = s.samples.clone();
        let t0 = s.t0;
        std::thread::spawn(move || loop {
            samples.lock().push((t0.elapsed().as_secs_f64(), rss_kib()));
            std::thread::sleep(Duration::from_millis(100));
        });
        s
    }

    fn mark(&self, what: &str) {
        self.marks
            .lock()
            .push((self.t0.elapsed().as_secs_f64(), what.to_string()));
    }

    fn print(&self) {
        let samples = self.samples.lock().clone();
        let marks = self.marks.lock().clone();
        let from = marks.first().map_or(0.0, |m| m.0);
        let before = samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .map_or(0, |s| s.1);
        let peak = samples
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|s| s.1)
            .max()
            .unwrap_or(0);
        let last = samples.last().map_or(0, |s| s.1);
        println!(
            "  rss_mib (server + simulated devices, one process): at the start of the measured window {:.1}, peak after {:.1}, at the end {:.1}",
            before as f64 / 1024.0,
            peak as f64 / 1024.0,
            last as f64 / 1024.0
        );
        for (t, what) in marks {
            println!("    {what} at {:.1}s", t - from);
        }
    }
}
