//! The server driven as a developer would from a shell: the real
//! `mosquitto_pub` and `mosquitto_sub` against the server's
//! embedded broker (the commands of docs/protocol.md and
//! docs/mqtt-quickstart.md). Needs mosquitto-clients on PATH.

mod mqtt_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use mqtt_support::fixture::world;
use reference_server::activity::ActivityQuery;
use reference_server::domain::SyncState;
use reference_server::gateway::{self, BrokerChoice};
use reference_server::protocol::{self, SyncPush};

fn clients_installed() {
    for bin in ["mosquitto_pub", "mosquitto_sub"] {
        let ok = Command::new(bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            ok,
            "{bin} not found: install the clients with `apt-get install mosquitto-clients`"
        );
    }
}

fn login(port: u16, client_id: &str, user: &str, secret: &str) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-i",
        client_id,
        "-u",
        user,
        "-P",
        secret,
        "-q",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(bin: &str, args: &[String]) -> String {
    let out = Command::new(bin).args(args).output().expect("run client");
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `mosquitto_sub -C 1` on `topic` in the background, then `mosquitto_pub`
/// with `pub_args` every half second until the subscriber got its message
/// (it may not be subscribed yet when the first one goes out); the message.
async fn publish_until_answered(sub_args: Vec<String>, pub_args: Vec<String>) -> String {
    let sub = Command::new("mosquitto_sub")
        .args(&sub_args)
        .args(["-C", "1", "-W", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output());
    let mut sent = 0;
    while !out.is_finished() && sent < 60 {
        run("mosquitto_pub", &pub_args);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = out.await.unwrap().expect("mosquitto_sub ran");
    assert!(
        out.status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_play_a_lock() {
    clients_installed();
    let w = world(1).await;
    let cred = w.issue_pin("482916").await;
    let mqtt = gateway::serve(
        w.service.clone(),
        BrokerChoice::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
        },
        |_| {},
    )
    .await
    .expect("mqtt serves");
    let port: u16 = mqtt.device_url.rsplit(':').next().unwrap().parse().unwrap();
    let (dev, secret) = w.devices[0].clone();
    let user = dev.to_string();
    let base = format!("fleet/{}/{dev}", w.site);

    // Shell 1 watches the lock's sync topic (a second session of the same
    // device: client id dev-N-something); shell 2 says "online" (retained).
    let mut sub = login(port, &format!("{user}-sub"), &user, &secret);
    sub.extend(["-t".into(), format!("{base}/sync")]);
    let mut online = login(port, &user, &user, &secret);
    online.extend([
        "-r".into(),
        "-t".into(),
        format!("{base}/status"),
        "-m".into(),
    ]);
    online.push(r#"{"online":true,"battery_pct":90}"#.into());
    let sync = publish_until_answered(sub, online).await;
    let push: SyncPush = protocol::decode(sync.as_bytes()).expect("a sync push");
    assert!(push.set.iter().any(|c| c.credential == cred), "{push:?}");

    // Ack the sync from the shell: the code becomes `set`.
    let mut ack = login(port, &user, &user, &secret);
    ack.extend(["-t".into(), format!("{base}/sync/ack"), "-m".into()]);
    ack.push(format!(
        r#"{{"version":{},"results":[{{"credential":{}}}]}}"#,
        push.version, cred.0
    ));
    run("mosquitto_pub", &ack);
    for _ in 0..200 {
        if w.state(cred, 0) == Some(SyncState::Set) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.state(cred, 0), Some(SyncState::Set));

    // A PIN check: watch auth/resp, send auth/req.
    let check = |pin: &str| {
        let mut sub = login(port, &format!("{user}-sub"), &user, &secret);
        sub.extend(["-t".into(), format!("{base}/auth/resp")]);
        let mut req = login(port, &user, &user, &secret);
        req.extend(["-t".into(), format!("{base}/auth/req"), "-m".into()]);
        req.push(format!(
            r#"{{"id":1,"credential":{{"type":"pin","value":"{pin}"}}}}"#
        ));
        publish_until_answered(sub, req)
    };
    let granted = check("482916").await;
    assert!(granted.contains(r#""decision":"granted""#), "{granted}");
    assert!(
        granted.contains(&format!(r#""credential_id":{}"#, cred.0)),
        "{granted}"
    );
    let denied = check("000000").await;
    assert!(denied.contains(r#""decision":"denied""#), "{denied}");
    assert!(denied.contains(r#""reason":"#), "{denied}");

    // The same event twice (a redelivery): logged once.
    let mut ev = login(port, &user, &user, &secret);
    ev.extend(["-t".into(), format!("{base}/events"), "-m".into()]);
    ev.push(r#"{"seq":1,"at":"2026-11-23T08:00:00Z","event":"door_opened"}"#.into());
    run("mosquitto_pub", &ev);
    run("mosquitto_pub", &ev);
    let m = mqtt.gateway.metrics().clone();
    for _ in 0..200 {
        if m.events_logged.get() + m.events_duplicate.get() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((m.events_logged.get(), m.events_duplicate.get()), (1, 1));
    let logged = w
        .service
        .activity(&ActivityQuery {
            device: Some(dev),
            from: None,
            to: None,
            kind: Some("door_opened".into()),
            limit: 10,
            before: None,
        })
        .unwrap();
    assert_eq!(logged.len(), 1);

    // A wrong secret is refused at CONNECT.
    let bad = login(port, &user, &user, "not-the-secret");
    let out = Command::new("mosquitto_pub")
        .args(&bad)
        .args(["-t", &format!("{base}/status"), "-m", "{}"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong secret must not connect");
    mqtt.gateway.shutdown().await;
}
