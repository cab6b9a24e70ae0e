//! The HTTP transport in real time against a real HTTP server (actix-web on
//! a free loopback port) that validates with the real `Engine` and checks
//! each device's Bearer secret: a door phone reads a QR and a card; a lock
//! fetches its codes (`GET /v1/devices/{device}/sync`, the reference
//! server's route and body) and acks them (`POST`); a server answering a
//! sync with garbage costs the lock a counted error, nothing more.

mod devices_support;

use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use devices_support::{
    all_codes_set, engine, eventually, issue_pin_in, reflashed_lock, snapshot_when, start_time,
};
use fleetsim::clock::SimClock;
use fleetsim::devices::fleet::{provision, Fleet, FleetSpec, Placement};
use fleetsim::devices::{DeviceOutcome, DeviceParams, Present};
use fleetsim::transport::{derived_secrets, DeviceSecrets, HttpConfig, HttpTransport, Transport};
use parking_lot::RwLock;

use fleetsim::devices::Control;
use reference_server::domain::{Actor, DenyReason, DeviceId, FloorScope, HolderKind, Schedule};
use reference_server::engine::{Command, Issue, Outcome, PinSpec, SecretSpec};
use reference_server::protocol::{AuthRequest, AuthResponse, SyncAckMsg, SyncPush, WireCredential};
use reference_server::{Check, Engine};

struct Server {
    engine: Arc<RwLock<Engine>>,
    secrets: DeviceSecrets,
    clock: SimClock,
    /// Each sync fetch: the device and whether it asked `full=true`.
    fetches: Fetches,
}

type Fetches = Arc<parking_lot::Mutex<Vec<(DeviceId, bool)>>>;

#[derive(serde::Deserialize)]
struct SyncQuery {
    full: Option<bool>,
}

async fn validate(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<AuthRequest>,
    s: web::Data<Server>,
) -> HttpResponse {
    // The reference server's route takes the numeric device id.
    let Ok(device) = path.parse::<u32>().map(reference_server::domain::DeviceId) else {
        return HttpResponse::NotFound().finish();
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some((s.secrets)(device).as_str()) {
        return HttpResponse::Unauthorized().finish();
    }
    let resp = match body.credential.to_presented() {
        Ok(presented) => {
            let check = Check {
                device,
                presented,
                floor: body.floor,
            };
            AuthResponse::from_decision(body.id, &s.engine.read().validate(&check, s.clock.now()))
        }
        Err(e) => AuthResponse::error(body.id, e.to_string()),
    };
    HttpResponse::Ok().json(resp)
}

fn bearer_ok(req: &HttpRequest, s: &Server, device: DeviceId) -> bool {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer == Some((s.secrets)(device).as_str())
}

/// The reference server's `GET /v1/devices/{device}/sync`, on the engine;
/// with `full=true` every code the device should hold counts as not set
/// first (`Command::SyncReset`, as the reference server does).
async fn device_sync(
    req: HttpRequest,
    path: web::Path<u32>,
    q: web::Query<SyncQuery>,
    s: web::Data<Server>,
) -> HttpResponse {
    let device = DeviceId(path.into_inner());
    if !bearer_ok(&req, &s, device) {
        return HttpResponse::Unauthorized().finish();
    }
    let full = q.full.unwrap_or(false);
    if full {
        let reset = Command::SyncReset { device };
        if let Err(e) = s.engine.write().apply(&Actor::System, reset, s.clock.now()) {
            return HttpResponse::NotFound().body(e.to_string());
        }
    }
    let Some(batch) = s.engine.read().pending_sync(device) else {
        return HttpResponse::NotFound().finish();
    };
    // Recorded once the batch is read: a fetch the test has seen carries
    // nothing issued after it.
    s.fetches.lock().push((device, full));
    let push = SyncPush::whole(&batch);
    let tokens = batch.tokens();
    let mut body = serde_json::to_value(&push).unwrap();
    body["tokens"] = serde_json::to_value(tokens).unwrap();
    HttpResponse::Ok().json(body)
}

/// The reference server's `POST /v1/devices/{device}/sync`.
async fn device_sync_ack(
    req: HttpRequest,
    path: web::Path<u32>,
    body: web::Json<SyncAckMsg>,
    s: web::Data<Server>,
) -> HttpResponse {
    let device = DeviceId(path.into_inner());
    if !bearer_ok(&req, &s, device) {
        return HttpResponse::Unauthorized().finish();
    }
    let mut e = s.engine.write();
    if e.pending_sync(device).map(|b| b.version) != Some(body.version) {
        return HttpResponse::Conflict().finish();
    }
    let cmd = Command::SyncAck {
        device,
        results: body.results.clone(),
    };
    match e.apply(&Actor::System, cmd, s.clock.now()) {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({"ok": true})),
        Err(err) => HttpResponse::BadRequest().body(err.to_string()),
    }
}

/// A device transport to the loopback server on `port`.
fn http_transport(port: u16, secrets: DeviceSecrets) -> HttpTransport {
    HttpTransport::new(
        HttpConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            ..HttpConfig::default()
        },
        secrets,
    )
    .unwrap()
}

/// Serves the device routes (validate, sync fetch and ack) on a free
/// loopback port; returns the port and the handle that stops the server.
fn serve(
    engine: &Arc<RwLock<Engine>>,
    secrets: &DeviceSecrets,
    clock: SimClock,
) -> (u16, actix_web::dev::ServerHandle) {
    let (port, handle, _) = serve_recording(engine, secrets, clock);
    (port, handle)
}

/// [`serve`], also answering the sync fetches it was asked.
fn serve_recording(
    engine: &Arc<RwLock<Engine>>,
    secrets: &DeviceSecrets,
    clock: SimClock,
) -> (u16, actix_web::dev::ServerHandle, Fetches) {
    let fetches = Fetches::default();
    let data = web::Data::new(Server {
        engine: engine.clone(),
        secrets: secrets.clone(),
        clock,
        fetches: fetches.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/v1/devices/{device}/validate", web::post().to(validate))
            .route("/v1/devices/{device}/sync", web::get().to(device_sync))
            .route("/v1/devices/{device}/sync", web::post().to(device_sync_ack))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let running = server.run();
    let handle = running.handle();
    actix_rt::spawn(running);
    (port, handle, fetches)
}

fn issue(
    e: &mut Engine,
    org: reference_server::domain::OrgId,
    door: reference_server::domain::DoorId,
    secret: SecretSpec,
    now: jiff::Timestamp,
) -> reference_server::domain::CredentialId {
    let h = match e
        .apply(
            &Actor::System,
            Command::CreateHolder {
                org,
                name: "Resident".into(),
                kind: HolderKind::Member,
                user: None,
                floors: FloorScope::Any,
            },
            now,
        )
        .unwrap()
        .outcome
    {
        Outcome::Holder(h) => h,
        o => panic!("{o:?}"),
    };
    match e
        .apply(
            &Actor::System,
            Command::IssueCredential(Issue {
                holder: h,
                name: "Key".into(),
                secret,
                schedule: Schedule::Permanent,
                doors: vec![door],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
            now,
        )
        .unwrap()
        .outcome
    {
        Outcome::Credential(c) => c,
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_door_phone_validates_over_http_with_its_bearer_secret() {
    actix_rt::System::new().block_on(async {
        let engine = engine(8);
        let clock = SimClock::starting_at(start_time());
        let spec = FleetSpec::new(8)
            .entrances(1)
            .sensors(false)
            .params(DeviceParams::quiet());
        let provisioned = provision(&mut engine.write(), &spec, clock.now()).unwrap();
        let door = provisioned.doors[0].door;
        let (qr, card) = {
            let mut e = engine.write();
            let qr = issue(&mut e, provisioned.org, door, SecretSpec::Qr, clock.now());
            issue(
                &mut e,
                provisioned.org,
                door,
                SecretSpec::Card { number: 4242 },
                clock.now(),
            );
            (e.token(qr).unwrap(), 4242u64)
        };
        let secrets = derived_secrets([4; 32]);
        let (port, handle) = serve(&engine, &secrets, clock);

        let good = http_transport(port, secrets);
        let fleet = Fleet::start(
            &spec,
            provisioned.clone(),
            Transport::Http(good.clone()),
            clock,
            &Placement::Current,
        );
        let phone = fleet.provisioned.doors[0].door_phone.unwrap();
        let read = |c: WireCredential| Present {
            credential: c,
            floor: None,
            human_timing: false,
        };
        // The reader's 200 ms default is tight for a first connection on a
        // busy machine; this test is about the wire, not the timeout.
        let got = fleet
            .present_with(phone, read(WireCredential::Qr(qr)))
            .await
            .unwrap();
        assert!(
            matches!(
                got.outcome,
                DeviceOutcome::Unlocked | DeviceOutcome::TimedOut
            ),
            "{got:?}"
        );
        if got.outcome == DeviceOutcome::Unlocked {
            assert!(got.latency_us > 0);
        }
        let got = fleet
            .present_with(phone, read(WireCredential::Card(card.to_string())))
            .await
            .unwrap();
        assert!(
            matches!(
                got.outcome,
                DeviceOutcome::Unlocked | DeviceOutcome::TimedOut
            ),
            "{got:?}"
        );
        let got = fleet
            .present_with(phone, read(WireCredential::Card("7".into())))
            .await
            .unwrap();
        assert!(
            matches!(
                got.outcome,
                DeviceOutcome::Denied(DenyReason::UnknownCredential) | DeviceOutcome::TimedOut
            ),
            "{got:?}"
        );
        // Over HTTP there is no event route: events are counted locally.
        let snap = fleet.snapshot(phone).await.unwrap();
        assert_eq!(good.local_log().device(phone).per_kind, snap.emitted);

        // Directly on the link, without the reader's timeout: a wrong
        // secret is refused by the server.
        let wrong = http_transport(port, derived_secrets([5; 32]));
        let ep = fleetsim::transport::Endpoint {
            device: phone,
            site: fleet.provisioned.doors[0].site,
            connectivity: reference_server::domain::Connectivity::Wifi,
        };
        let link = wrong.link(ep);
        let req = AuthRequest {
            id: 1,
            credential: WireCredential::Card("4242".into()),
            floor: None,
            at: None,
        };
        let err = link.check(&req).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        let ok = good.link(ep).check(&req).await.unwrap();
        assert_eq!(
            ok.response.decision,
            reference_server::protocol::Verdict::Granted
        );

        handle.stop(true).await;
        actix_rt::System::current().stop();
    });
}

#[test]
fn a_lock_told_to_sync_fetches_its_new_code_over_http_and_grants_it() {
    actix_rt::System::new().block_on(async {
        let engine = engine(8);
        let clock = SimClock::starting_at(start_time());
        let spec = FleetSpec::new(8)
            .wifi_doors(1)
            .params(DeviceParams::quiet());
        let provisioned = provision(&mut engine.write(), &spec, clock.now()).unwrap();
        let secrets = derived_secrets([4; 32]);
        let (port, handle) = serve(&engine, &secrets, clock);
        let transport = http_transport(port, secrets);
        let fleet = Fleet::start(
            &spec,
            provisioned,
            Transport::Http(transport.clone()),
            clock,
            &Placement::Current,
        );
        let lock = fleet.provisioned.doors[0].lock.unwrap();
        let door = fleet.provisioned.doors[0].door;
        // A new code for the door: pending on the lock until it syncs.
        let code = issue(
            &mut engine.write(),
            fleet.provisioned.org,
            door,
            SecretSpec::Pin {
                pin: PinSpec::Manual("4829".into()),
            },
            clock.now(),
        );
        let stored = |e: &Arc<RwLock<Engine>>| {
            e.read()
                .credentials()
                .iter()
                .filter(|c| c.id == code)
                .flat_map(|c| c.placements.iter())
                .any(|pl| pl.device == lock && pl.state.on_device())
        };
        assert!(!stored(&engine));
        let before = fleet.snapshot(lock).await.unwrap();
        fleet.control(lock, Control::SyncNow).unwrap();
        eventually("the lock to store and ack the code", || {
            let fleet = &fleet;
            let engine = engine.clone();
            async move {
                let s = fleet.snapshot(lock).await.unwrap();
                s.syncs_applied > before.syncs_applied
                    && s.cached_codes > before.cached_codes
                    && stored(&engine)
            }
        })
        .await;
        // The server shows it set: nothing pending for the lock any more.
        let pending = engine.read().pending_sync(lock).unwrap();
        assert!(pending.set.iter().all(|(c, _)| *c != code), "{pending:?}");
        assert_eq!(transport.sync_errors(), 0);
        let got = fleet
            .present_with(
                lock,
                Present {
                    credential: WireCredential::Pin("4829".into()),
                    floor: None,
                    human_timing: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked, "{got:?}");
        handle.stop(true).await;
        actix_rt::System::current().stop();
    });
}

#[test]
fn a_sync_answered_with_garbage_is_a_counted_error_and_the_lock_keeps_working() {
    actix_rt::System::new().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A server that answers every request 200 with a body that is not
        // JSON.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        actix_rt::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                actix_rt::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let body = "{\"version\": garbage";
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        let engine = engine(8);
        let clock = SimClock::starting_at(start_time());
        let spec = FleetSpec::new(8)
            .wifi_doors(1)
            .params(DeviceParams::quiet());
        let provisioned = provision(&mut engine.write(), &spec, clock.now()).unwrap();
        let transport = http_transport(port, derived_secrets([4; 32]));
        let fleet = Fleet::start(
            &spec,
            provisioned,
            Transport::Http(transport.clone()),
            clock,
            &Placement::Current,
        );
        let lock = fleet.provisioned.doors[0].lock.unwrap();
        for n in 1..=2u64 {
            // The second request goes out: the failed one is not in flight.
            fleet.control(lock, Control::SyncNow).unwrap();
            let t = transport.clone();
            eventually("the sync error to be counted", || {
                let t = t.clone();
                async move { t.sync_errors() >= n }
            })
            .await;
        }
        assert_eq!(transport.sync_errors(), 2);
        let s = fleet.snapshot(lock).await.unwrap();
        assert_eq!(s.syncs_applied, 0);
        assert!(s.online);
        // A direct fetch says why.
        let ep = fleetsim::transport::Endpoint {
            device: lock,
            site: fleet.provisioned.doors[0].site,
            connectivity: reference_server::domain::Connectivity::Wifi,
        };
        let err = transport.link(ep).fetch_sync().await.unwrap_err();
        assert!(err.to_string().contains("not a sync message"), "{err}");
        actix_rt::System::current().stop();
    });
}

/// A Wi-Fi lock reflashed with an empty cache, over HTTP: the server shows
/// its three codes set (acked before the reboot), so a plain fetch would
/// carry nothing; the lock's first fetch is `?full=true` and gets all
/// three again. A reconnect later fetches without `full`: a code issued
/// while it was offline arrives, the three it holds are not pushed again.
#[test]
fn a_lock_that_lost_its_cache_asks_over_http_for_every_code_and_a_reconnect_for_the_delta() {
    actix_rt::System::new().block_on(async {
        let r = reflashed_lock(9);
        let (engine, clock, lock) = (r.engine.clone(), r.clock, r.lock);
        let secrets = derived_secrets([4; 32]);
        let (port, handle, fetches) = serve_recording(&engine, &secrets, clock);
        let transport = http_transport(port, secrets);
        let fleet = Fleet::start(
            &r.spec,
            r.provisioned,
            Transport::Http(transport.clone()),
            clock,
            &Placement::Current,
        );
        let s = snapshot_when(&fleet, lock, "every code pushed again", |s| {
            s.cached_codes == 3
        })
        .await;
        assert_eq!(s.emitted.get("code_set"), 3);
        all_codes_set(&engine, lock).await;
        let asked: Vec<bool> = fetches.lock().iter().map(|(_, full)| *full).collect();
        assert_eq!(
            asked.first(),
            Some(&true),
            "the first fetch asks for everything: {asked:?}"
        );
        assert_eq!(asked.iter().filter(|f| **f).count(), 1, "{asked:?}");
        // The fetch after the ack (more behind that batch?) found nothing.
        let f = fetches.clone();
        eventually("the fetch after the ack", || {
            let f = f.clone();
            async move { f.lock().len() >= 2 }
        })
        .await;
        let before = fetches.lock().len();

        fleet
            .control(lock, Control::GoOffline { for_s: 0.5 })
            .unwrap();
        issue_pin_in(&mut engine.write(), r.org, r.door, "1357", clock.now());
        let s = snapshot_when(&fleet, lock, "the new code after the reconnect", |s| {
            s.online && s.cached_codes == 4
        })
        .await;
        assert_eq!(
            s.emitted.get("code_set"),
            4,
            "only the new code came after the reconnect"
        );
        let asked: Vec<bool> = fetches.lock().iter().map(|(_, full)| *full).collect();
        assert!(asked.len() > before, "{asked:?}");
        assert!(
            asked[before..].iter().all(|full| !full),
            "a reconnect asks for the delta: {asked:?}"
        );
        assert_eq!(transport.sync_errors(), 0);
        handle.stop(true).await;
        actix_rt::System::current().stop();
    });
}
