//! The server against its own OpenAPI document: schemathesis
//! (<https://schemathesis.io>, installed from PyPI by `.ci/run`) generates
//! requests for every operation from `/openapi.json` (valid ones, invalid
//! ones, boundary values, unknown methods, missing and wrong
//! credentials) and runs every check it has (`--checks all`): status codes,
//! content types, headers and bodies as documented, invalid data refused,
//! 405 with `Allow`, authentication not ignored. The test fails on any
//! failure it reports.
//!
//! The server holds a small world first (an organization, a site with
//! doors and devices, holders, a stay and codes), so ids near 0, which
//! schemathesis tries first, reach real resources; the device routes run
//! as door phone A with its own secret.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use reference_server::service::Clock;
use serde_json::json;

/// The version `.ci/run` installs.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Generated cases per operation and phase: enough to try each field's
/// boundaries and a few random bodies, small enough for about a minute on
/// a 2-core machine.
const MAX_EXAMPLES: u32 = 25;
/// The whole run's budget; schemathesis stops spending time on new cases
/// past it (the checks of what ran still count).
const MAX_TIME_S: u32 = 90;
/// Fixed, so a failure replays.
const SEED: u64 = 20_261_207;

fn schemathesis_version() -> Option<String> {
    let out = Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The config file: each security scheme's credentials, and door phone A
/// as the device of the device routes (its secret opens no other).
/// An `Idempotency-Key` reused with another request is a 422 by design
/// (docs/reference-server.md), a rule no schema can state; keys drawn from
/// the schema repeat across cases (`0`, `00`). Each well-formed key is
/// made fresh before the call, as a client makes one per change, so every
/// other answer is checked as usual; malformed keys are sent as drawn
/// (their 400 is checked). Reuse is tested in `tests/idempotency.rs`.
const HOOKS: &str = r#"
import uuid

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name, value in list(headers.items()):
        well_formed = (
            isinstance(value, str)
            and 1 <= len(value) <= 255
            and all("!" <= c <= "~" for c in value)
        )
        if name.lower() == "idempotency-key" and well_formed:
            headers[name] = uuid.uuid4().hex
"#;

/// What the DELETE routes may delete: things made for them, so a delete
/// never takes away the world the other operations run in.
struct Doomed {
    site: u64,
    door: u64,
    device: u64,
    holder: u64,
}

fn write_config(
    dir: &Path,
    owner: &str,
    device: u64,
    device_secret: &str,
    doomed: &Doomed,
) -> std::path::PathBuf {
    let path = dir.join("schemathesis.toml");
    let hooks = dir.join("schemathesis_hooks.py");
    std::fs::write(&hooks, HOOKS).expect("write the schemathesis hooks");
    let hooks = hooks.display();
    // Deleted once, then unknown (404); a site or door with children is
    // refused (409); a bearer that is no owner's (the device secret
    // schemathesis may send) is refused (403), as on every owner route.
    let deletes: String = [
        ("sites", "site", doomed.site),
        ("doors", "door", doomed.door),
        ("devices", "device", doomed.device),
        ("holders", "holder", doomed.holder),
    ]
    .iter()
    .map(|(list, param, id)| {
        format!(
            "\n[[operations]]\ninclude-name = \"DELETE /v1/{list}/{{{param}}}\"\n\
             parameters = {{ \"path.{param}\" = {id} }}\n\
             checks.positive_data_acceptance.expected-statuses = [\"2XX\", \"401\", \"403\", \"404\", \"409\"]\n"
        )
    })
    .collect();
    let text = format!(
        r#"
hooks = "{hooks}"

[auth.openapi.user_token]
bearer = "{owner}"

[auth.openapi.device_secret]
bearer = "{device_secret}"

[[operations]]
include-path-regex = "^/v1/devices/\\{{device\\}}/(validate|sync)$"
parameters = {{ "path.device" = {device} }}

# A page cursor is opaque: only one the list answered is valid, which no
# schema can state, so any other string (valid as a string) is a 400
# naming `page_cursor`. Every other parameter of these lists is stated
# whole in the schema.
[[operations]]
include-name = [
  "GET /v1/events",
  "GET /v1/webhooks/{{webhook}}/deliveries",
  "GET /v1/organizations/{{org}}/sites",
  "GET /v1/organizations/{{org}}/doors",
  "GET /v1/organizations/{{org}}/devices",
  "GET /v1/organizations/{{org}}/holders",
  "GET /v1/sites/{{site}}/locks",
  "GET /v1/devices/{{device}}/codes",
  "GET /v1/devices/{{device}}/schedule",
]
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403", "404"]

# The activity log is a paged list (the opaque cursor's 400) with a rule
# no schema can state: `to` must be after `from` (422).
[[operations]]
include-name = "GET /v1/devices/{{device}}/activity"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "401", "403", "404", "422"]

# The event stream never ends by itself (it is an open Server-Sent Events
# connection), so no generated request to it would complete: it is tested
# with a real SSE reader in tests/events.rs instead.
[[operations]]
include-name = "GET /v1/events/stream"
enabled = false

# Rules no schema can state: they answer 422 to a request whose every field
# is valid on its own (a stay that ends before it starts, the last owner
# leaving, a check-in after the check-out, a fallback pool on a device that is no lock, a 6-digit PIN on a
# site without them, a door admin without doors, a 17th webhook of an
# organization). Every other operation
# must accept what its schema accepts.
[[operations]]
include-name = [
  "DELETE /v1/organizations/{{org}}/members/{{user}}",
  "PUT /v1/organizations/{{org}}/members/{{user}}",
  "POST /v1/holders/{{holder}}/stays",
  "POST /v1/stays/{{stay}}/check-in",
  "POST /v1/stays/{{stay}}/check-out",
  "POST /v1/credentials",
  "PUT /v1/credentials/{{credential}}/pin",
  "POST /v1/devices/{{device}}/fallback-pool",
  "POST /v1/organizations/{{org}}/sites",
  "POST /v1/organizations/{{org}}/holders",
  "POST /v1/doors/{{door}}/devices",
  "POST /v1/webhooks",
  "PATCH /v1/holders/{{holder}}",
]
checks.positive_data_acceptance.expected-statuses = ["2XX", "401", "403", "404", "409", "422"]

# The sandbox controls: a device id schemathesis draws names any kind of
# device, and an action that does not fit its kind is a 409 naming why (a
# jam at a door sensor); a card number of 20 digits above 2^64 - 1 is a
# 422 (the schema's pattern cannot bound its value).
[[operations]]
include-path-regex = "^/v1/devices/\\{{device\\}}/simulate/"
checks.positive_data_acceptance.expected-statuses = ["2XX", "401", "403", "404", "409", "422"]
{deletes}"#
    );
    std::fs::write(&path, text).expect("write the schemathesis config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_conforms_to_its_openapi_document() {
    let version = schemathesis_version().unwrap_or_else(|| {
        panic!(
            "schemathesis is not installed: run `bash .ci/run` (it installs what the tests \
             need) or `pip install schemathesis=={SCHEMATHESIS_VERSION}`"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("data"),
        Clock::manual(ts("2026-03-23T10:00:00Z")),
    )
    .await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let guest = holder(&api, t, "Gina Guest", "guest").await;
    let member = holder(&api, t, "Rita Resident", "member").await;
    api.ok(
        "POST",
        &format!("/v1/holders/{guest}/stays"),
        t,
        Some(
            json!({"check_in_at": "2026-03-23T15:00:00Z", "check_out_at": "2026-03-25T10:00:00Z"}),
        ),
    )
    .await;
    pin_code(
        &api,
        t,
        member,
        json!([w.door_a]),
        json!({"type": "permanent"}),
    )
    .await;
    let doomed = Doomed {
        site: id(
            &api.ok(
                "POST",
                "/v1/organizations/0/sites",
                t,
                Some(json!({"name": "Doomed", "time_zone": "UTC"})),
            )
            .await,
            "site",
        ),
        door: id(
            &api.ok(
                "POST",
                &format!("/v1/sites/{}/doors", w.site),
                t,
                Some(json!({"name": "Doomed"})),
            )
            .await,
            "door",
        ),
        device: id(
            &api.ok(
                "POST",
                &format!("/v1/doors/{}/devices", w.door_b),
                t,
                Some(json!({"kind": "door_sensor", "name": "Doomed"})),
            )
            .await,
            "device",
        ),
        holder: holder(&api, t, "Doomed", "visitor").await,
    };
    let config = write_config(dir.path(), t, w.phone_a, &w.phone_a_secret, &doomed);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let url = server.url();
        let cwd = dir.path().to_path_buf();
        move || {
            Command::new("schemathesis")
                .arg("--config-file")
                .arg(&config)
                .arg("--no-color")
                .args(["run", &format!("{url}/openapi.json")])
                .args(["--checks", "all"])
                .args(["--max-examples", &MAX_EXAMPLES.to_string()])
                .args(["--max-time", &MAX_TIME_S.to_string()])
                .args(["--seed", &SEED.to_string()])
                // One worker: hypothesis's lambda descriptions call
                // `ast.parse`, which CPython 3.11 cannot run in two
                // threads at once ("AST constructor recursion depth
                // mismatch").
                .args(["--workers", "1"])
                .args(["--generation-database", "none"])
                // Its report files, if any, go to the temp dir.
                .current_dir(cwd)
                .output()
                .expect("schemathesis runs")
        }
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{version}, {took:?}\n{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis reported failures ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // A run that tested nothing would also exit 0.
    assert!(
        stdout.contains("passed") && !stdout.contains("No operations"),
        "schemathesis tested nothing:\n{stdout}"
    );
    server.stop().await;
}
