//! Processes the run tests start: the `fleetsim` binary, a reference
//! server of its own (the real binary), a Mosquitto broker; and the admin
//! API calls the tests make. Shared by `run_cli` and `distributed`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the binary; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().current_dir(root()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// A Mosquitto of the test's own on a free loopback port, set up as
/// scenarios/README.md documents for a test broker: no password file
/// (device secrets are issued per run), the fleet ACL. Stopped on drop.
pub struct Mosquitto {
    child: std::process::Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        let which = Command::new("mosquitto")
            .arg("-h")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        assert!(
            which.is_ok(),
            "this test needs Mosquitto: apt-get install mosquitto (tests/run.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {}\n\
                 use_username_as_clientid true\nmax_inflight_messages 1000\n\
                 max_queued_messages 10000\npersistence false\nlog_dest stderr\n\
                 set_tcp_nodelay true\n",
                root().join("docs/mosquitto/acl").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed().as_secs() < 10, "mosquitto did not listen");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Mosquitto { child, port, dir }
    }

    /// Where devices connect.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Runs `test`; on failure shows the broker's log first.
    pub fn showing_log<R>(&self, test: impl FnOnce() -> R + std::panic::UnwindSafe) -> R {
        match std::panic::catch_unwind(test) {
            Ok(r) => r,
            Err(e) => {
                let log = std::fs::read_to_string(self.dir.path().join("mosquitto.log"))
                    .unwrap_or_default();
                eprintln!("mosquitto log:\n{log}");
                std::panic::resume_unwind(e);
            }
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference server as a process of its own (the real binary), on a
/// free port, with its own token key: nothing shared with the run.
pub struct TargetServer {
    child: std::process::Child,
    pub url: String,
    /// Where its gateway's devices connect (`devices connect to ...`).
    pub devices_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for TargetServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `reference-server` binary (built here when only fleetsim's tests
/// were built).
pub fn reference_server_bin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_fleetsim"));
    let bin = exe.with_file_name(format!("reference-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(root())
            .args([
                "build",
                "-p",
                "reference-server",
                "--bin",
                "reference-server",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "cannot build reference-server");
    }
    bin
}

pub fn start_target() -> TargetServer {
    start_target_with(&[])
}

/// [`start_target`] with more flags (`--broker URL`: its gateway on that
/// broker rather than its embedded one).
pub fn start_target_with(extra: &[&str]) -> TargetServer {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // Its own signing key, unlike any run's.
    std::fs::write(dir.path().join("token.key"), [0x5Au8; 32]).unwrap();
    let mut child = Command::new(reference_server_bin())
        .args([
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-workers",
            "2",
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(out).lines();
    let mut said = |prefix: &str| loop {
        let line = lines
            .next()
            .expect("the server said where it listens")
            .unwrap();
        if let Some(u) = line.strip_prefix(prefix) {
            break u.trim().to_string();
        }
    };
    let url = said("listening on ");
    let devices_url = said("devices connect to ");
    // Keep reading stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    TargetServer {
        child,
        url,
        devices_url,
        _dir: dir,
    }
}

/// One admin API call to `t`; answers (status, JSON body).
pub fn admin(
    t: &TargetServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = reqwest::Client::new().request(m, format!("{}{path}", t.url));
        if let Some(tok) = token {
            rb = rb.bearer_auth(tok);
        }
        if !body.is_null() {
            rb = rb.json(&body);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    })
}

pub fn assert_no_false_decisions(r: &Value) {
    let d = &r["decisions"]["counts"];
    let decided: u64 = [
        "true_grants",
        "true_denials",
        "false_accepts",
        "false_rejects",
    ]
    .iter()
    .map(|k| d[*k].as_u64().unwrap_or(0))
    .sum();
    assert!(decided > 0, "{d}");
    assert_eq!(d["false_accepts"], 0, "{d}");
    assert_eq!(d["false_rejects"], 0, "{d}");
}
