//! The HTTP transport in real time against a real HTTP server (actix-web on
//! a free loopback port) that validates with the real `Engine` and checks
//! each device's Bearer secret: a door phone reads a QR and a card.

mod devices_support;

use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use devices_support::{engine, start_time};
use fleetsim::clock::SimClock;
use fleetsim::devices::fleet::{provision, Fleet, FleetSpec, Placement};
use fleetsim::devices::{DeviceOutcome, DeviceParams, Present};
use fleetsim::transport::{derived_secrets, DeviceSecrets, HttpConfig, HttpTransport, Transport};
use parking_lot::RwLock;
use reference_server::domain::{Actor, DenyReason, FloorScope, HolderKind, Schedule};
use reference_server::engine::{Command, Issue, Outcome, SecretSpec};
use reference_server::protocol::{AuthRequest, AuthResponse, WireCredential};
use reference_server::{Check, Engine};

struct Server {
    engine: Arc<RwLock<Engine>>,
    secrets: DeviceSecrets,
    clock: SimClock,
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
                name: "Visitor".into(),
                kind: HolderKind::Visitor,
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
        let data = web::Data::new(Server {
            engine: engine.clone(),
            secrets: secrets.clone(),
            clock,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v1/devices/{device}/validate", web::post().to(validate))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let running = server.run();
        let handle = running.handle();
        actix_rt::spawn(running);

        let base_url = format!("http://127.0.0.1:{port}");
        let good = HttpTransport::new(
            HttpConfig {
                base_url: base_url.clone(),
                ..HttpConfig::default()
            },
            secrets,
        )
        .unwrap();
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
        let wrong = HttpTransport::new(
            HttpConfig {
                base_url,
                ..HttpConfig::default()
            },
            derived_secrets([5; 32]),
        )
        .unwrap();
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
