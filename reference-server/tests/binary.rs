//! The `reference-server` binary as an operator runs it: a taken port, its
//! logs (plain off a terminal, JSON on request, no error on a clean start
//! and stop) and what never reaches them (codes, tokens, secrets).

mod mqtt_support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reference_server::domain::{DeviceId, SiteId};
use serde_json::{json, Value};

/// The password of Home Assistant's account on the embedded broker.
const HA_LOG_PASSWORD: &str = "ha-log-test-password";

/// Hang guard for a start or a stop (generous: a busy CI machine).
const DEADLINE: Duration = Duration::from_secs(60);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reference-server"))
}

/// A server process: its HTTP and MQTT addresses, and everything it wrote
/// on stderr so far.
struct Running {
    child: Child,
    url: String,
    mqtt_port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Starts the binary on free ports in `data`; returns once it said
    /// where devices connect.
    fn start(data: &Path, extra: &[&str], rust_log: Option<&str>) -> Running {
        Running::start_with(data, extra, rust_log, &[])
    }

    /// `start` with these environment variables set.
    fn start_with(
        data: &Path,
        extra: &[&str],
        rust_log: Option<&str>,
        env: &[(&str, &str)],
    ) -> Running {
        let mut cmd = bin();
        cmd.envs(env.iter().copied());
        cmd.args(["--data-dir", data.to_str().unwrap()])
            .args(["--http", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
            .args(["--http-workers", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match rust_log {
            Some(l) => cmd.env("RUST_LOG", l),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd.spawn().expect("the binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut url, mut mqtt) = (None, None);
        while mqtt.is_none() {
            let line = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!(
                    "the server did not start; stderr:\n{}",
                    stderr.lock().unwrap()
                )
            });
            if let Some(u) = line.strip_prefix("listening on ") {
                url = Some(u.trim().to_string());
            }
            if let Some(m) = line.strip_prefix("devices connect to mqtt://") {
                mqtt = m.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
        }
        Running {
            child,
            url: url.expect("the HTTP address was printed first"),
            mqtt_port: mqtt.unwrap(),
            stderr,
        }
    }

    /// SIGTERM, then waits for the exit; the exit status and stderr.
    fn stop(mut self) -> (i32, String) {
        let pid = self.child.id() as i32;
        // SAFETY: a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let code = wait(&mut self.child);
        // The reader thread ends at EOF; give it a moment to take the rest.
        std::thread::sleep(Duration::from_millis(200));
        let text = self.stderr.lock().unwrap().clone();
        (code, text)
    }
}

/// The exit code, or a panic after `DEADLINE` (the child is killed).
fn wait(child: &mut Child) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("no exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines at ERROR or WARN level.
fn errors_and_warnings(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains("ERROR") || l.contains(" WARN "))
        .collect()
}

#[test]
fn a_taken_http_port_ends_the_start_at_once_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["--http", &addr, "--mqtt-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_ne!(code, 0, "stderr: {err}");
    assert!(err.contains(&addr), "names the address: {err}");
    assert!(!out.contains("listening on"), "{out}");
    // Refused before the store was opened.
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn logs_are_plain_text_off_a_terminal_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, text) = Running::start(&data, &[], None).stop();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes in a pipe: {text:?}"
    );
    let (code, text) = Running::start(&data, &["--log-format", "json"], None).stop();
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
    }
}

/// With an external broker (Mosquitto, as in production behind the fleet
/// ACL): the HTTP listener, the store, the gateway's client and the
/// binary's own start-up and shutdown log no error and no warning, on a
/// fresh data directory and on a restart over it. (With the embedded
/// broker, rumqttd itself logs per-connection errors: see broker.rs.)
#[test]
fn a_clean_start_and_stop_log_no_error_or_warning() {
    let broker = mqtt_support::Mosquitto::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = broker.engine_url();
    for _ in 0..2 {
        let (code, text) = Running::start(&data, &["--broker", &url], None).stop();
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("gateway connected to the broker"), "{text}");
        let bad = errors_and_warnings(&text);
        assert!(bad.is_empty(), "{bad:#?}\n\nall:\n{text}");
    }
}

/// The PIN `pin` as a code in the logs: not inside a longer number and not
/// a time's fraction of a second (`.482916Z`).
fn shows(logs: &str, code: &str) -> bool {
    let b = logs.as_bytes();
    logs.match_indices(code).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| b[i]);
        let after = b.get(at + code.len()).copied();
        !before.is_some_and(|c| c.is_ascii_digit() || c == b'.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn codes_tokens_and_secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    // With the Home Assistant bridge, whose pin_code commands carry PINs.
    let server = Running::start_with(
        &dir.path().join("data"),
        &["--home-assistant"],
        Some("debug"),
        &[("HOME_ASSISTANT_PASSWORD", HA_LOG_PASSWORD)],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secrets: Vec<String> = rt.block_on(async {
        let http = reqwest::Client::new();
        let url = server.url.clone();
        let call = |method: &'static str, path: String, token: Option<String>, body: Value| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let mut rb = http.request(m, format!("{url}{path}")).json(&body);
                if let Some(t) = token {
                    rb = rb.bearer_auth(t);
                }
                let resp = rb.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let (_, boot) = call("POST", "/v1/bootstrap".into(), None, json!({"name": "Olivia", "email": "o@example.com", "organization": "Acme"})).await;
        let token = boot["token"].as_str().unwrap().to_string();
        let t = || Some(token.clone());
        let (_, site) = call("POST", "/v1/organizations/0/sites".into(), t(), json!({"name": "S", "time_zone": "UTC", "settings": {"six_digit_pins": true, "custom_pins": true}})).await;
        let site = site["site"].as_u64().unwrap();
        let (_, door) = call("POST", format!("/v1/sites/{site}/doors"), t(), json!({"name": "D"})).await;
        let door = door["door"].as_u64().unwrap();
        let (_, lock) = call("POST", format!("/v1/doors/{door}/devices"), t(), json!({"kind": "lock", "name": "L"})).await;
        let (_, phone) = call("POST", format!("/v1/doors/{door}/devices"), t(), json!({"kind": "door_phone", "name": "P"})).await;
        let lock_secret = lock["mqtt"]["password"].as_str().unwrap().to_string();
        let phone_secret = phone["mqtt"]["password"].as_str().unwrap().to_string();
        let (lock_id, phone_id) = (lock["device"].as_u64().unwrap(), phone["device"].as_u64().unwrap());
        // The lock comes online over MQTT and receives its codes in a sync.
        let mut dev = mqtt_support::Device::connect(
            server.mqtt_port,
            SiteId(site as u32),
            DeviceId(lock_id as u32),
            &lock_secret,
        )
        .await
        .expect("the lock connects");
        let (_, member) = call("POST", "/v1/organizations/0/holders".into(), t(), json!({"name": "M", "kind": "member"})).await;
        let member = member["holder"].as_u64().unwrap();
        let issue = |secret: Value| json!({"holder": member, "name": "C", "secret": secret, "schedule": {"type": "permanent"}, "doors": [door]});
        let (s, _) = call("POST", "/v1/credentials".into(), t(), issue(json!({"kind": "pin", "pin": {"type": "custom", "value": "739146"}}))).await;
        assert_eq!(s, 201);
        let (_, gen) = call("POST", "/v1/credentials".into(), t(), issue(json!({"kind": "pin", "pin": {"type": "generate", "value": {"digits": 6}}}))).await;
        let gen = gen["credential"].as_u64().unwrap();
        let (_, revealed) = call("POST", format!("/v1/credentials/{gen}/reveal"), t(), Value::Null).await;
        let generated = revealed["pin"].as_str().unwrap().to_string();
        let (_, card) = call("POST", "/v1/credentials".into(), t(), issue(json!({"kind": "card", "number": 5_550_013_377u64}))).await;
        assert!(card["credential"].is_u64(), "{card}");
        let (_, qr) = call("POST", "/v1/credentials".into(), t(), issue(json!({"kind": "qr"}))).await;
        let qr = qr["token"].as_str().unwrap().to_string();
        // A PIN changed to a typed one, and bodies that get a PIN wrong.
        let (s, _) = call("PUT", format!("/v1/credentials/{gen}/pin"), t(), json!({"pin": {"type": "manual", "value": "582937"}})).await;
        assert_eq!(s, 200);
        let (s, _) = call("POST", "/v1/credentials".into(), t(), issue(json!({"kind": "pin", "pin": {"type": "custom", "value": 615284}}))).await;
        assert_eq!(s, 422);
        let (s, _) = call("POST", "/v1/credentials".into(), t(), issue(json!({"kind": "pin", "pin": {"type": "custom", "value": "61528x"}}))).await;
        assert_eq!(s, 422);
        // Checks over HTTP and MQTT, granted and denied.
        for pin in ["739146", "582937", "904417"] {
            let (s, _) = call("POST", format!("/v1/devices/{phone_id}/validate"), Some(phone_secret.clone()), json!({"id": 1, "credential": {"type": "pin", "value": pin}})).await;
            assert_eq!(s, 200);
        }
        for (kind, value) in [("card", "5550013377"), ("qr", qr.as_str())] {
            let (s, r) = call("POST", format!("/v1/devices/{phone_id}/validate"), Some(phone_secret.clone()), json!({"id": 2, "credential": {"type": kind, "value": value}})).await;
            assert_eq!((s, r["decision"].as_str()), (200, Some("granted")), "{r}");
        }
        let sync = dev.expect_sync().await;
        assert!(!sync.set.is_empty(), "the lock received codes");
        let r = dev.present_pin("739146").await;
        let _ = r;
        let r = dev.present_pin("904417").await;
        assert_eq!(r.decision, reference_server::protocol::Verdict::Denied);
        // Home Assistant sets a slot, changes its PIN, sends bad ones and
        // clears it; the lock gets each PIN by sync.
        let object = format!("homeassistant/lock/fleet_dev-{lock_id}");
        let ha_pub = |payload: &str| {
            let st = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &server.mqtt_port.to_string()])
                .args(["-u", "homeassistant", "-P", HA_LOG_PASSWORD, "-i", "ha-log"])
                .args(["-t", &format!("{object}/set"), "-q", "1", "-m", payload])
                .status()
                .expect("mosquitto_pub runs");
            assert!(st.success(), "mosquitto_pub");
        };
        let secret_of = |push: &reference_server::protocol::SyncPush| {
            push.set.iter().map(|c| c.secret.clone()).collect::<Vec<_>>()
        };
        ha_pub(r#"{"pin_code": {"user": 1, "pin_code": "318564"}}"#);
        let push = dev.expect_sync().await;
        assert!(
            secret_of(&push).contains(&reference_server::protocol::WireSecret::Pin("318564".into())),
            "the lock gets the slot's PIN"
        );
        dev.ack_sync(&mqtt_support::ack_all(&push)).await;
        ha_pub(r#"{"pin_code": {"user": 1, "pin_code": "420759"}}"#);
        let push = dev.expect_sync().await;
        assert!(
            secret_of(&push).contains(&reference_server::protocol::WireSecret::Pin("420759".into())),
            "the lock gets the slot's PIN"
        );
        dev.ack_sync(&mqtt_support::ack_all(&push)).await;
        ha_pub("864213");
        ha_pub(r#"{"pin_code": {"user": 2, "pin_code": 864213}}"#);
        ha_pub(r#"{"pin_code": {"user": 2, "pin_code": "111111"}}"#);
        ha_pub(r#"{"pin_code": {"user": 2, "pin_code": "864213"}, "oops": 1}"#);
        ha_pub(r#"{"pin_code": {"user": 1, "pin_code": null}}"#);
        let users = || {
            let out = Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &server.mqtt_port.to_string()])
                .args(["-u", "homeassistant", "-P", HA_LOG_PASSWORD, "-i", "ha-log-reader"])
                .args(["-t", &format!("{object}/users"), "--retained-only", "-W", "1"])
                .output()
                .expect("mosquitto_sub runs");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        for _ in 0..100 {
            if users() == r#"{"users":{}}"# {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(users(), r#"{"users":{}}"#, "the slot was cleared");
        vec![
            token,
            lock_secret,
            phone_secret,
            "739146".into(),
            generated,
            "582937".into(),
            "615284".into(),
            "904417".into(),
            "5550013377".into(),
            qr,
            "318564".into(),
            "420759".into(),
            "864213".into(),
            "111111".into(),
        ]
    });
    let (code, logs) = server.stop();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("DEBUG"), "debug logging was on");
    // The Home Assistant commands were logged (without their PINs).
    assert_eq!(
        logs.matches("home assistant pin_code applied").count(),
        3,
        "{logs}"
    );
    assert!(
        logs.matches("home assistant: pin_code refused").count() >= 2,
        "{logs}"
    );
    assert!(
        logs.contains("(6 bytes)"),
        "the bare PIN, logged as its length"
    );
    let leaked: Vec<&String> = secrets.iter().filter(|s| shows(&logs, s)).collect();
    assert!(
        leaked.is_empty(),
        "in the logs: {leaked:?}\n\n{}",
        logs.lines()
            .filter(|l| leaked.iter().any(|s| l.contains(s.as_str())))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `--home-assistant` needs a password Home Assistant logs in with on the
/// embedded broker (HOME_ASSISTANT_PASSWORD), and a discovery prefix that
/// is one topic level: each mistake is a clear error at start.
#[test]
fn home_assistant_flags_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |extra: &[&str]| {
        let out = bin()
            .args(["--data-dir", data.to_str().unwrap()])
            .args(["--http", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("HOME_ASSISTANT_PASSWORD")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} was taken");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--home-assistant"]);
    assert!(err.contains("HOME_ASSISTANT_PASSWORD"), "{err}");
    // A port nobody listens on: the prefix is refused before any connect.
    let broker = format!("mqtt://engine:pw@127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    for prefix in ["home/assistant", "fleet", "#", ""] {
        let err = run(&[
            "--broker",
            &broker,
            "--home-assistant",
            "--home-assistant-prefix",
            prefix,
        ]);
        assert!(err.contains("discovery prefix"), "{prefix:?}: {err}");
    }
}

/// `--webhook-ca-file`: a missing file or one without a PEM certificate
/// ends the start with a clear error naming the flag.
#[test]
fn a_bad_webhook_ca_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, says) in [(&missing, "missing.pem"), (&not_pem, "no PEM certificate")] {
        let out = bin()
            .args(["--data-dir", data.to_str().unwrap()])
            .args(["--http", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
            .args(["--webhook-ca-file", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{file:?} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--webhook-ca-file") && err.contains(says),
            "{err}"
        );
    }
}
