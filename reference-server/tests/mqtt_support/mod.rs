//! Test support for the MQTT tests: a device played by a plain rumqttc
//! client (what any firmware developer would write), and a real Mosquitto
//! started on a free port with a generated password file and the ACL from
//! docs/mosquitto/acl.

#![allow(dead_code)]

pub mod fixture;
pub mod scenarios;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reference_server::domain::{DeviceId, SiteId};
use reference_server::protocol::{
    self, AuthRequest, AuthResponse, Channel, CommandAck, DeviceCommand, Event, Status, SyncAckMsg,
    SyncPush, WireCredential,
};
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// How long a test waits for any one answer before failing (generous: CI
/// machines are slow; no test measures speed).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// A device on the wire.
pub struct Device {
    pub site: SiteId,
    pub id: DeviceId,
    pub client: AsyncClient,
    inbox: mpsc::Receiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
    next_id: u64,
}

#[derive(Debug)]
pub enum Received {
    AuthResp(AuthResponse),
    Sync(SyncPush),
    Cmd(DeviceCommand),
}

impl Device {
    /// Connects as `dev-N` with `secret`, subscribes to its own topics and
    /// says it is online (its Last Will says offline). Errors if the broker
    /// refuses the connection.
    pub async fn connect(
        port: u16,
        site: SiteId,
        id: DeviceId,
        secret: &str,
    ) -> Result<Device, String> {
        Self::connect_as(port, site, id, &id.to_string(), secret, true).await
    }

    /// Like `connect`, with any username (to try another device's
    /// credentials) and without the online status when `announce` is false.
    pub async fn connect_as(
        port: u16,
        site: SiteId,
        id: DeviceId,
        username: &str,
        secret: &str,
        announce: bool,
    ) -> Result<Device, String> {
        let status_topic = protocol::topic("fleet", site, id, Channel::Status);
        let mut opts = MqttOptions::new(username, "127.0.0.1", port);
        opts.set_credentials(username, secret)
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_last_will(LastWill::new(
                &status_topic,
                protocol::encode(&Status {
                    online: false,
                    battery_pct: None,
                    firmware: None,
                    at: None,
                }),
                QoS::AtLeastOnce,
                true,
            ));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        for chan in [Channel::AuthResp, Channel::Sync, Channel::Cmd] {
            client
                .try_subscribe(protocol::topic("fleet", site, id, chan), QoS::AtLeastOnce)
                .map_err(|e| e.to_string())?;
        }
        // Wait for the CONNACK and the SUBACKs before anything else, so no
        // answer can arrive before the subscriptions exist.
        let subscribed = tokio::time::timeout(ANSWER_TIMEOUT, async {
            let mut subacks = 0;
            while subacks < 3 {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => subacks += 1,
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| "no CONNACK/SUBACK".to_string())?;
        subscribed?;
        let (tx, inbox) = mpsc::channel(1024);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec())).await;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let dev = Device {
            site,
            id,
            client,
            inbox,
            task,
            next_id: 1,
        };
        if announce {
            dev.set_online(true).await;
        }
        Ok(dev)
    }

    pub fn topic(&self, chan: Channel) -> String {
        protocol::topic("fleet", self.site, self.id, chan)
    }

    pub async fn set_online(&self, online: bool) {
        let st = Status {
            online,
            battery_pct: Some(90),
            firmware: Some("test-1.0".into()),
            at: None,
        };
        self.publish_raw(&self.topic(Channel::Status), protocol::encode(&st), true)
            .await;
    }

    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("request channel open");
    }

    /// Presents a PIN and waits for the answer with the same id.
    pub async fn present_pin(&mut self, pin: &str) -> AuthResponse {
        let id = self.next_id;
        self.next_id += 1;
        let req = AuthRequest {
            id,
            credential: WireCredential::Pin(pin.into()),
            floor: None,
            at: None,
        };
        self.publish_raw(&self.topic(Channel::AuthReq), protocol::encode(&req), false)
            .await;
        self.expect_auth(id).await
    }

    pub async fn expect_auth(&mut self, id: u64) -> AuthResponse {
        loop {
            match self.next().await {
                Received::AuthResp(r) if r.id == id => return r,
                _ => {}
            }
        }
    }

    pub async fn expect_sync(&mut self) -> SyncPush {
        loop {
            if let Received::Sync(s) = self.next().await {
                return s;
            }
        }
    }

    pub async fn expect_cmd(&mut self) -> DeviceCommand {
        loop {
            if let Received::Cmd(c) = self.next().await {
                return c;
            }
        }
    }

    /// The next message from the engine; panics after `ANSWER_TIMEOUT`.
    pub async fn next(&mut self) -> Received {
        self.try_next(ANSWER_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("{}: no message within {ANSWER_TIMEOUT:?}", self.id))
    }

    pub async fn try_next(&mut self, wait: Duration) -> Option<Received> {
        let (topic, payload) = tokio::time::timeout(wait, self.inbox.recv()).await.ok()??;
        let (_, _, chan) = protocol::parse_topic("fleet", &topic).expect("device topic");
        Some(match chan {
            Channel::AuthResp => Received::AuthResp(protocol::decode(&payload).expect("auth/resp")),
            Channel::Sync => Received::Sync(protocol::decode(&payload).expect("sync")),
            Channel::Cmd => Received::Cmd(protocol::decode(&payload).expect("cmd")),
            other => panic!("device got a message on {other:?}"),
        })
    }

    pub async fn ack_sync(&self, ack: &SyncAckMsg) {
        self.publish_raw(&self.topic(Channel::SyncAck), protocol::encode(ack), false)
            .await;
    }

    pub async fn ack_cmd(&self, ack: &CommandAck) {
        self.publish_raw(&self.topic(Channel::CmdAck), protocol::encode(ack), false)
            .await;
    }

    pub async fn send_event(&self, ev: &Event) {
        self.publish_raw(&self.topic(Channel::Events), protocol::encode(ev), false)
            .await;
    }

    /// Drops the connection without DISCONNECT, so the broker publishes the
    /// Last Will.
    pub fn crash(self) {
        self.task.abort();
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.task.abort();
    }
}

/// Applies a sync push as a lock would and acks every code.
pub fn ack_all(push: &SyncPush) -> SyncAckMsg {
    SyncAckMsg {
        version: push.version,
        results: push
            .credentials()
            .map(|credential| protocol::SyncResult {
                credential,
                failure: None,
            })
            .collect(),
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Mosquitto process for one test, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

pub const ENGINE_USER: &str = "engine";
pub const ENGINE_PASSWORD: &str = "engine-test-password";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

impl Mosquitto {
    /// Starts `mosquitto` with the ACL of docs/mosquitto/acl and a
    /// password file holding the engine account and `devices` (username,
    /// secret). Panics with a clear message when Mosquitto is not installed.
    pub fn start(devices: &[(String, String)]) -> Mosquitto {
        let which = |bin: &str| {
            Command::new(bin)
                .arg("-h")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        assert!(
            which("mosquitto") && which("mosquitto_passwd"),
            "these tests need a real Mosquitto: install it with \
             `apt-get install mosquitto mosquitto-clients` (the binaries \
             mosquitto and mosquitto_passwd must be on PATH)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let passwd = dir.path().join("passwd");
        let mut lines = format!("{ENGINE_USER}:{ENGINE_PASSWORD}\n");
        for (user, secret) in devices {
            lines.push_str(&format!("{user}:{secret}\n"));
        }
        std::fs::write(&passwd, lines).expect("write passwd");
        let st = Command::new("mosquitto_passwd")
            .arg("-U")
            .arg(&passwd)
            .status()
            .expect("run mosquitto_passwd");
        assert!(st.success(), "mosquitto_passwd -U failed");
        let acl = repo_root().join("docs/mosquitto/acl");
        assert!(acl.exists(), "missing {}", acl.display());
        let log = dir.path().join("mosquitto.log");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous false\n\
                 password_file {}\n\
                 acl_file {}\n\
                 use_username_as_clientid true\n\
                 max_inflight_messages 1000\n\
                 max_queued_messages 10000\n\
                 message_size_limit 65536\n\
                 persistence false\n\
                 log_dest stderr\n\
                 log_type all\n",
                passwd.display(),
                acl.display(),
            ),
        )
        .expect("write mosquitto.conf");
        // The log goes to stderr, into a file we own: Mosquitto started as
        // root drops to its own user and could not write into our temp dir.
        let log_file = std::fs::File::create(&log).expect("create the log file");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start mosquitto");
        let m = Mosquitto {
            port,
            child,
            log,
            _dir: dir,
        };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen on {port}; log: {}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn engine_url(&self) -> String {
        format!(
            "mqtt://{ENGINE_USER}:{ENGINE_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
