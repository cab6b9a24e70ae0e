//! Shared test helpers: start the server on port 0 in-process and drive it
//! with a real HTTP client.
#![allow(dead_code)]

use std::path::Path;

use jiff::Timestamp;
use reference_server::server::{self, Config, Server};
use reference_server::service::Clock;
use serde_json::{json, Value};

pub async fn start(dir: &Path, clock: Clock) -> Server {
    start_with_ca(dir, clock, None).await
}

/// [`start`], with the webhook client also trusting the CA certificates of
/// `webhook_ca_file` (`--webhook-ca-file`).
pub async fn start_with_ca(
    dir: &Path,
    clock: Clock,
    webhook_ca_file: Option<std::path::PathBuf>,
) -> Server {
    server::run(
        Config {
            data_dir: dir.to_path_buf(),
            http: "127.0.0.1:0".parse().unwrap(),
            clock,
            http_workers: 2,
            webhook_ca_file,
        },
        std::future::pending(),
    )
    .await
    .expect("server starts")
}

#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub url: String,
}

impl Api {
    pub fn new(url: String) -> Api {
        Api {
            client: reqwest::Client::new(),
            url,
        }
    }

    /// Any request; answers the status and the JSON body (Null if none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.client.request(m, format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `call`, answering the body's text as it came (byte comparisons).
    pub async fn text(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.client.request(m, format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .client
            .request(m, format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A call that must succeed (2xx); answers the body.
    pub async fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, Some(token), body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    pub async fn bootstrap(&self) -> String {
        let (s, v) = self
            .call("POST", "/v1/bootstrap", None, Some(json!({"name": "Olivia Owner", "email": "owner@example.com", "organization": "Acme Living"})))
            .await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// Checks a credential at a device over HTTP with the device's secret.
    pub async fn validate(&self, device: u64, secret: &str, credential: Value) -> Value {
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/devices/{device}/validate"),
                Some(secret),
                Some(json!({"id": 1, "credential": credential})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

/// A small community: one site (Europe/Berlin), door A (a unit door) with a
/// lock, a linked keypad and a door phone; door B (common area) with a door
/// phone.
pub struct World {
    pub owner: String,
    pub site: u64,
    pub floor: u64,
    pub door_a: u64,
    pub door_b: u64,
    pub lock_a: u64,
    pub keypad_a: u64,
    pub phone_a: u64,
    pub phone_a_secret: String,
    pub phone_b: u64,
    pub phone_b_secret: String,
}

pub fn id(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

pub async fn world(api: &Api) -> World {
    let owner = api.bootstrap().await;
    let t = owner.as_str();
    let site = id(
        &api.ok("POST", "/v1/organizations/0/sites", t, Some(json!({"name": "Riverside", "time_zone": "Europe/Berlin", "settings": {"six_digit_pins": true, "custom_pins": true}}))).await,
        "site",
    );
    let b = id(
        &api.ok(
            "POST",
            &format!("/v1/sites/{site}/buildings"),
            t,
            Some(json!({"name": "North"})),
        )
        .await,
        "building",
    );
    let floor = id(
        &api.ok(
            "POST",
            &format!("/v1/buildings/{b}/floors"),
            t,
            Some(json!({"number": 3})),
        )
        .await,
        "floor",
    );
    let unit = id(
        &api.ok(
            "POST",
            &format!("/v1/floors/{floor}/units"),
            t,
            Some(json!({"name": "3A"})),
        )
        .await,
        "unit",
    );
    let door_a = id(
        &api.ok(
            "POST",
            &format!("/v1/sites/{site}/doors"),
            t,
            Some(json!({"name": "Apartment 3A", "unit": unit})),
        )
        .await,
        "door",
    );
    let door_b = id(
        &api.ok(
            "POST",
            &format!("/v1/sites/{site}/doors"),
            t,
            Some(json!({"name": "Lobby", "common_area": true, "lift_floors": [floor]})),
        )
        .await,
        "door",
    );
    let dev = |v: Value| {
        (
            id(&v, "device"),
            v["mqtt"]["password"].as_str().unwrap().to_string(),
        )
    };
    let (lock_a, _) = dev(api
        .ok(
            "POST",
            &format!("/v1/doors/{door_a}/devices"),
            t,
            Some(json!({"kind": "lock", "name": "Front lock", "location": "Apartment door"})),
        )
        .await);
    let (keypad_a, _) = dev(api
        .ok(
            "POST",
            &format!("/v1/doors/{door_a}/devices"),
            t,
            Some(json!({"kind": "keypad", "name": "Keypad", "linked_to": lock_a})),
        )
        .await);
    let (phone_a, phone_a_secret) = dev(api
        .ok(
            "POST",
            &format!("/v1/doors/{door_a}/devices"),
            t,
            Some(json!({"kind": "door_phone", "name": "Phone A"})),
        )
        .await);
    let (phone_b, phone_b_secret) = dev(api
        .ok(
            "POST",
            &format!("/v1/doors/{door_b}/devices"),
            t,
            Some(json!({"kind": "door_phone", "name": "Lobby phone"})),
        )
        .await);
    World {
        owner,
        site,
        floor,
        door_a,
        door_b,
        lock_a,
        keypad_a,
        phone_a,
        phone_a_secret,
        phone_b,
        phone_b_secret,
    }
}

pub async fn holder(api: &Api, token: &str, name: &str, kind: &str) -> u64 {
    id(
        &api.ok(
            "POST",
            "/v1/organizations/0/holders",
            token,
            Some(json!({"name": name, "kind": kind})),
        )
        .await,
        "holder",
    )
}

/// Issues a generated 4-digit PIN; answers (credential, pin).
pub async fn pin_code(
    api: &Api,
    token: &str,
    holder: u64,
    doors: Value,
    schedule: Value,
) -> (u64, String) {
    let c = id(
        &api.ok(
            "POST",
            "/v1/credentials",
            token,
            Some(json!({"holder": holder, "name": "Code", "secret": {"kind": "pin", "pin": {"type": "generate", "value": {"digits": 4}}}, "schedule": schedule, "doors": doors})),
        )
        .await,
        "credential",
    );
    let pin = api
        .ok("POST", &format!("/v1/credentials/{c}/reveal"), token, None)
        .await["pin"]
        .as_str()
        .unwrap()
        .to_string();
    (c, pin)
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}
