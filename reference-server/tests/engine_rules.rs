//! The engine's rules end to end through its public API: every denial reason,
//! use counts under concurrency, the sync lifecycle, roles.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use jiff::civil::{Time, Weekday};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use reference_server::domain::*;
use reference_server::engine::{Applied, Issue, Outcome, PinSpec, SecretSpec, SyncResult};
use reference_server::{Check, Command, Engine, EngineConfig, EngineError, Presented};

const SYS: Actor = Actor::System;

fn t0() -> Timestamp {
    // Tuesday 2026-11-24 10:00 UTC (11:00 in Berlin).
    "2026-11-24T10:00:00Z".parse().unwrap()
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

/// A small community: one site in Berlin, a unit door with a Wi-Fi lock and a
/// keypad, a common-area door with a door phone serving two lift floors, a BLE
/// lock on a second unit door, and holders.
struct World {
    e: Engine,
    owner: UserId,
    org: OrgId,
    site: SiteId,
    unit_door: DoorId,
    lobby: DoorId,
    ble_door: DoorId,
    lock: DeviceId,
    keypad: DeviceId,
    phone: DeviceId,
    ble_lock: DeviceId,
    floor_2: FloorId,
    floor_3: FloorId,
    resident: HolderId,
    guest: HolderId,
}

fn out(r: Result<Applied, EngineError>) -> Outcome {
    r.expect("command applies").outcome
}

macro_rules! id {
    ($outcome:expr, $variant:ident) => {
        match $outcome {
            Outcome::$variant(id) => id,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

impl World {
    fn new() -> World {
        World::with_seed(7)
    }

    fn with_seed(seed: u64) -> World {
        let mut e = Engine::new(EngineConfig {
            token_key: TokenKey::from_bytes([3; 32]),
            seed,
        });
        let now = t0();
        let owner = id!(
            out(e.apply(
                &SYS,
                Command::CreateUser {
                    name: "Olivia".into(),
                    email: "o@example.com".into()
                },
                now
            )),
            User
        );
        let org = id!(
            out(e.apply(
                &Actor::User(owner),
                Command::CreateOrganization {
                    name: "Maple Court".into(),
                    description: String::new(),
                    owner,
                    personal: false
                },
                now
            )),
            Organization
        );
        let settings = SiteSettings {
            six_digit_pins: true,
            custom_pins: true,
            lockout: LockoutPolicy {
                max_wrong: 3,
                window_s: 60,
                lockout_s: 30,
            },
        };
        let site = id!(
            out(e.apply(
                &SYS,
                Command::CreateSite {
                    org,
                    name: "Maple".into(),
                    time_zone: "Europe/Berlin".into(),
                    settings
                },
                now
            )),
            Site
        );
        let b = id!(
            out(e.apply(
                &SYS,
                Command::CreateBuilding {
                    site,
                    name: "A".into()
                },
                now
            )),
            Building
        );
        let floor_2 = id!(
            out(e.apply(
                &SYS,
                Command::CreateFloor {
                    building: b,
                    number: 2
                },
                now
            )),
            Floor
        );
        let floor_3 = id!(
            out(e.apply(
                &SYS,
                Command::CreateFloor {
                    building: b,
                    number: 3
                },
                now
            )),
            Floor
        );
        let unit = id!(
            out(e.apply(
                &SYS,
                Command::CreateUnit {
                    floor: floor_2,
                    name: "2A".into()
                },
                now
            )),
            Unit
        );
        let door = |e: &mut Engine, name: &str, common_area: bool, lift_floors: Vec<FloorId>| {
            id!(
                out(e.apply(
                    &SYS,
                    Command::CreateDoor {
                        site,
                        name: name.into(),
                        common_area,
                        unit: Some(unit),
                        lift_floors
                    },
                    now
                )),
                Door
            )
        };
        let unit_door = door(&mut e, "Apartment door", false, vec![]);
        let lobby = door(&mut e, "Lobby", true, vec![floor_2, floor_3]);
        let ble_door = door(&mut e, "Storage", false, vec![]);
        let device = |e: &mut Engine, door, kind, connectivity, linked_to| {
            let cmd = Command::CreateDevice {
                door,
                kind,
                connectivity,
                name: format!("{kind:?}"),
                location: "Apartment door".into(),
                linked_to,
                code_slots: 250,
            };
            id!(out(e.apply(&SYS, cmd, now)), Device)
        };
        let lock = device(
            &mut e,
            unit_door,
            DeviceKind::Lock,
            Connectivity::Wifi,
            None,
        );
        let keypad = device(
            &mut e,
            unit_door,
            DeviceKind::Keypad,
            Connectivity::Wifi,
            Some(lock),
        );
        let phone = device(
            &mut e,
            lobby,
            DeviceKind::DoorPhone,
            Connectivity::Wifi,
            None,
        );
        let ble_lock = device(&mut e, ble_door, DeviceKind::Lock, Connectivity::Ble, None);
        let holder = |e: &mut Engine, name: &str, kind, floors| {
            id!(
                out(e.apply(
                    &SYS,
                    Command::CreateHolder {
                        org,
                        name: name.into(),
                        kind,
                        user: None,
                        floors
                    },
                    now
                )),
                Holder
            )
        };
        let resident = holder(
            &mut e,
            "Rita",
            HolderKind::Member,
            FloorScope::Only(vec![floor_2]),
        );
        let guest = holder(&mut e, "Gus", HolderKind::Guest, FloorScope::Any);
        World {
            e,
            owner,
            org,
            site,
            unit_door,
            lobby,
            ble_door,
            lock,
            keypad,
            phone,
            ble_lock,
            floor_2,
            floor_3,
            resident,
            guest,
        }
    }

    fn issue(
        &mut self,
        holder: HolderId,
        secret: SecretSpec,
        schedule: Schedule,
        doors: Vec<DoorId>,
    ) -> CredentialId {
        let issue = Issue {
            holder,
            name: "code".into(),
            secret,
            schedule,
            doors,
            include_common_areas: false,
            floors: FloorScope::Any,
        };
        let id = id!(
            out(self.e.apply(&SYS, Command::IssueCredential(issue), t0())),
            Credential
        );
        self.ack_all();
        id
    }

    fn pin(&mut self, pin: &str, schedule: Schedule) -> (CredentialId, Pin) {
        let id = self.issue(
            self.resident,
            SecretSpec::Pin {
                pin: PinSpec::Manual(pin.into()),
            },
            schedule,
            vec![self.unit_door],
        );
        (id, Pin::parse(pin).unwrap())
    }

    /// Every device confirms every pending change.
    fn ack_all(&mut self) {
        for dev in [self.lock, self.keypad, self.phone, self.ble_lock] {
            let batch = self.e.pending_sync(dev).unwrap();
            let results = batch
                .set
                .iter()
                .map(|(c, _)| *c)
                .chain(batch.remove.iter().copied())
                .map(|credential| SyncResult {
                    credential,
                    failure: None,
                })
                .collect();
            self.e
                .apply(
                    &SYS,
                    Command::SyncAck {
                        device: dev,
                        results,
                    },
                    t0(),
                )
                .unwrap();
        }
    }

    fn check(&self, device: DeviceId, presented: Presented<'_>, now: Timestamp) -> Decision {
        // The keypad's per-device slots match the credentials they copy.
        self.e.assert_pin_indexes_agree();
        self.e.validate(
            &Check {
                device,
                presented,
                floor: None,
            },
            now,
        )
    }
}

fn reason(d: Decision) -> Option<DenyReason> {
    d.reason()
}

/// The answers around a lockout say when it ends: the wrong PIN that locks
/// the keypad and every `locked_out` denial carry the end (the locking
/// try's whole second plus the policy's 30 s); other answers carry none.
#[test]
fn a_lockout_answer_says_when_the_lockout_ends() {
    let mut w = World::new();
    let (_, good) = w.pin("5826", Schedule::Permanent);
    let wrong = Pin::parse("0000").unwrap();
    let at = |ms: i64| t0() + SignedDuration::from_millis(ms);
    for ms in [0, 900] {
        let d = w.check(w.keypad, Presented::Pin(wrong), at(ms));
        assert_eq!(
            (d.reason(), d.locked_until()),
            (Some(DenyReason::WrongPin), None)
        );
    }
    // The third try, 1.7 s in, locks it: until second 1 + 30.
    let end = t0() + SignedDuration::from_secs(31);
    let d = w.check(w.keypad, Presented::Pin(wrong), at(1_700));
    assert_eq!(d.reason(), Some(DenyReason::WrongPin));
    assert_eq!(d.locked_until(), Some(end));
    for (ms, p) in [(2_000, good), (30_999, wrong)] {
        let d = w.check(w.keypad, Presented::Pin(p), at(ms));
        assert_eq!(d.reason(), Some(DenyReason::LockedOut), "at {ms} ms");
        assert_eq!(d.locked_until(), Some(end), "at {ms} ms");
    }
    // The other keypad of the site is not locked.
    let d = w.check(w.phone, Presented::Pin(wrong), at(2_000));
    assert_eq!(d.locked_until(), None);
    // At the end it opens again, and the answer carries no end.
    let d = w.check(w.keypad, Presented::Pin(good), end);
    assert!(d.is_granted());
    assert_eq!(d.locked_until(), None);
    // Wire: the end travels in the answer, absent when there is none.
    let resp = reference_server::protocol::AuthResponse::from_decision(
        7,
        &Decision::Denied {
            reason: DenyReason::LockedOut,
            locked_until: Some(end),
        },
    );
    let json = String::from_utf8(reference_server::protocol::encode(&resp)).unwrap();
    assert!(
        json.contains(r#""locked_until":"2026-11-24T10:00:31Z""#),
        "{json}"
    );
    let granted = reference_server::protocol::AuthResponse::from_decision(7, &d);
    let json = String::from_utf8(reference_server::protocol::encode(&granted)).unwrap();
    assert!(!json.contains("locked_until"), "{json}");
}

/// One table that produces every denial reason of the domain.
#[test]
fn every_denial_reason() {
    let mut w = World::new();
    let now = t0();
    let mut seen = std::collections::BTreeSet::new();
    let mut expect = |what: &str, d: Decision, want: DenyReason| {
        assert_eq!(reason(d), Some(want), "{what}");
        seen.insert(want.as_str());
    };

    // unknown credential: a card nobody holds; a forged QR token.
    expect(
        "unknown card",
        w.check(w.phone, Presented::Card(999), now),
        DenyReason::UnknownCredential,
    );
    let forged = TokenKey::from_bytes([4; 32]).sign(&TokenClaims {
        kind: TokenKind::Qr,
        credential: CredentialId(0),
        version: 0,
        expires: None,
    });
    expect(
        "forged QR",
        w.check(w.phone, Presented::Qr(&forged), now),
        DenyReason::UnknownCredential,
    );
    // wrong PIN.
    expect(
        "wrong pin",
        w.check(w.keypad, Presented::Pin(Pin::parse("4821").unwrap()), now),
        DenyReason::WrongPin,
    );
    // not yet valid / expired.
    let (_, p) = w.pin(
        "5821",
        Schedule::Temporary {
            start: now + hours(1),
            end: now + hours(2),
        },
    );
    expect(
        "future",
        w.check(w.keypad, Presented::Pin(p), now),
        DenyReason::NotYetValid,
    );
    let (_, p) = w.pin(
        "5822",
        Schedule::Temporary {
            start: now - hours(2),
            end: now - hours(1),
        },
    );
    expect(
        "past",
        w.check(w.keypad, Presented::Pin(p), now),
        DenyReason::Expired,
    );
    // outside schedule: Mondays only, and t0 is a Tuesday.
    let monday = Schedule::Recurring {
        days: Weekdays::from_days([Weekday::Monday]),
        window: DailyWindow {
            start: Time::constant(8, 0, 0, 0),
            end: Time::constant(18, 0, 0, 0),
        },
        start: None,
        end: None,
    };
    let (_, p) = w.pin("5823", monday);
    expect(
        "monday code on tuesday",
        w.check(w.keypad, Presented::Pin(p), now),
        DenyReason::OutsideSchedule,
    );
    // uses exhausted: a delivery PIN with one use.
    let (_, p) = w.pin(
        "5824",
        Schedule::Delivery {
            start: now - hours(1),
            end: now + hours(1),
            max_uses: Some(1),
        },
    );
    assert!(w.check(w.keypad, Presented::Pin(p), now).is_granted());
    expect(
        "second delivery",
        w.check(w.keypad, Presented::Pin(p), now),
        DenyReason::UsesExhausted,
    );
    // replayed: a one-time visitor QR key.
    let visitor = Schedule::Visitor {
        repeat: Repeat::Never,
        start: now - hours(1),
        end: now + hours(1),
        days: None,
        window: None,
        each_door_count: Some(1),
    };
    let qr = w.issue(w.guest, SecretSpec::Qr, visitor, vec![w.lobby]);
    let token = w.e.token(qr).unwrap();
    assert!(w.check(w.phone, Presented::Qr(&token), now).is_granted());
    expect(
        "replayed QR",
        w.check(w.phone, Presented::Qr(&token), now),
        DenyReason::Replayed,
    );
    // door not allowed: a QR for the lobby shown at the storage BLE lock.
    expect(
        "wrong door",
        w.check(w.ble_lock, Presented::Qr(&token), now),
        DenyReason::DoorNotAllowed,
    );
    // floor not allowed: the resident may go to floor 2, not 3.
    // Cards are not stored on door phones, so a card works there at once.
    w.issue(
        w.resident,
        SecretSpec::Card { number: 77 },
        Schedule::Permanent,
        vec![w.lobby],
    );
    let floor_check = |w: &World, floor| {
        w.e.validate(
            &Check {
                device: w.phone,
                presented: Presented::Card(77),
                floor: Some(floor),
            },
            now,
        )
    };
    let holder_floors = FloorScope::FollowHolder(w.resident);
    let follow = Issue {
        holder: w.guest,
        name: "visitor follows resident".into(),
        secret: SecretSpec::Card { number: 78 },
        schedule: Schedule::Permanent,
        doors: vec![w.lobby],
        include_common_areas: false,
        floors: holder_floors,
    };
    w.e.apply(&SYS, Command::IssueCredential(follow), now)
        .unwrap();
    let follow_check = |w: &World, floor| {
        w.e.validate(
            &Check {
                device: w.phone,
                presented: Presented::Card(78),
                floor: Some(floor),
            },
            now,
        )
    };
    assert!(
        follow_check(&w, w.floor_2).is_granted(),
        "follow my access: floor 2"
    );
    expect(
        "follow my access: floor 3",
        follow_check(&w, w.floor_3),
        DenyReason::FloorNotAllowed,
    );
    assert!(
        floor_check(&w, w.floor_3).is_granted(),
        "card with any floor"
    );
    // holder disabled.
    let (c, p) = w.pin("5825", Schedule::Permanent);
    let rita = w.resident;
    w.e.apply(
        &SYS,
        Command::SetHolderDisabled {
            holder: rita,
            disabled: true,
        },
        now,
    )
    .unwrap();
    expect(
        "holder disabled",
        w.check(w.keypad, Presented::Pin(p), now),
        DenyReason::HolderDisabled,
    );
    w.e.apply(
        &SYS,
        Command::SetHolderDisabled {
            holder: rita,
            disabled: false,
        },
        now,
    )
    .unwrap();
    assert!(w.check(w.keypad, Presented::Pin(p), now).is_granted());
    // disabled and revoked.
    w.e.apply(
        &SYS,
        Command::SetCredentialDisabled {
            credential: c,
            disabled: true,
        },
        now,
    )
    .unwrap();
    expect(
        "code disabled",
        w.check(w.keypad, Presented::Pin(p), now),
        DenyReason::Disabled,
    );
    w.e.apply(&SYS, Command::RevokeCredential { credential: c }, now)
        .unwrap();
    expect(
        "code revoked",
        w.check(w.keypad, Presented::Pin(p), now),
        DenyReason::Revoked,
    );
    // not checked in / checked out (lock settings on).
    let lock = w.lock;
    let settings = GuestSettings {
        guest_can_open_remotely: false,
        prevent_access_until_checked_in: true,
        revoke_access_on_check_out: true,
    };
    w.e.apply(
        &SYS,
        Command::UpdateGuestSettings {
            device: lock,
            settings,
        },
        now,
    )
    .unwrap();
    let stay = id!(
        out(w.e.apply(
            &SYS,
            Command::CreateStay {
                holder: w.guest,
                check_in_at: now + hours(4),
                check_out_at: now + hours(48)
            },
            now
        )),
        Stay
    );
    let guest_pin = w.issue(
        w.guest,
        SecretSpec::Pin {
            pin: PinSpec::Generate { digits: 6 },
        },
        Schedule::Stay { stay },
        vec![w.unit_door],
    );
    let gp = w.e.credential(guest_pin).unwrap().pin().unwrap();
    expect(
        "before check-in",
        w.check(w.keypad, Presented::Pin(gp), now),
        DenyReason::NotCheckedIn,
    );
    assert!(
        w.check(w.keypad, Presented::Pin(gp), now + hours(5))
            .is_granted(),
        "after check-in time"
    );
    w.e.apply(&SYS, Command::CheckOut { stay }, now).unwrap();
    expect(
        "after check-out",
        w.check(w.keypad, Presented::Pin(gp), now + hours(6)),
        DenyReason::CheckedOut,
    );
    // locked out: three wrong PINs within the window, then even a good one is refused.
    let (_, good) = w.pin("5826", Schedule::Permanent);
    for _ in 0..3 {
        w.check(w.keypad, Presented::Pin(Pin::parse("0000").unwrap()), now);
    }
    expect(
        "locked out",
        w.check(w.keypad, Presented::Pin(good), now),
        DenyReason::LockedOut,
    );
    assert!(
        w.check(
            w.keypad,
            Presented::Pin(good),
            now + SignedDuration::from_secs(31)
        )
        .is_granted(),
        "lockout ends"
    );
    // device unknown.
    expect(
        "unknown device",
        w.check(DeviceId(9_999), Presented::Pin(good), now),
        DenyReason::DeviceUnknown,
    );

    let all: std::collections::BTreeSet<_> = DenyReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(seen, all, "every reason produced");
}

#[test]
fn custom_pins_follow_the_site_rules_and_name_them() {
    let mut w = World::new();
    let now = t0();
    let try_custom = |w: &mut World, pin: &str, door: DoorId| {
        let issue = Issue {
            holder: w.resident,
            name: "mine".into(),
            secret: SecretSpec::Pin {
                pin: PinSpec::Custom(pin.into()),
            },
            schedule: Schedule::Permanent,
            doors: vec![door],
            include_common_areas: false,
            floors: FloorScope::Any,
        };
        w.e.apply(&SYS, Command::IssueCredential(issue), now)
            .map(|_| ())
    };
    let ud = w.unit_door;
    assert_eq!(
        try_custom(&mut w, "1111", ud),
        Err(EngineError::Pin(PinRuleError::RepeatedDigit))
    );
    assert_eq!(
        try_custom(&mut w, "5432", ud),
        Err(EngineError::Pin(PinRuleError::ConsecutiveRun))
    );
    assert_eq!(
        try_custom(&mut w, "12", ud),
        Err(EngineError::Pin(PinRuleError::WrongLength(2)))
    );
    let lobby = w.lobby;
    assert_eq!(
        try_custom(&mut w, "4829", lobby),
        Err(EngineError::Pin(PinRuleError::CommunityDoor))
    );
    assert_eq!(try_custom(&mut w, "4829", ud), Ok(()));
    assert_eq!(
        try_custom(&mut w, "4829", ud),
        Err(EngineError::Pin(PinRuleError::InUse)),
        "unique per lock"
    );
    let site = w.site;
    let mut s = w.e.site(site).unwrap().settings;
    s.six_digit_pins = false;
    w.e.apply(&SYS, Command::UpdateSiteSettings { site, settings: s }, now)
        .unwrap();
    assert_eq!(
        try_custom(&mut w, "482917", ud),
        Err(EngineError::Pin(PinRuleError::SixDigitsNotEnabled))
    );
}

/// A lock that lost its codes (a reboot with an empty cache) asks for a
/// full resync: every code it held or was being given is pending again,
/// under a new version, and walks back to `set` on the ack; a removal in
/// progress stays one. Only the system (the device's own traffic) may ask.
#[test]
fn a_full_resync_sends_every_code_again_under_a_new_version() {
    let mut w = World::new();
    let now = t0();
    let issue = |pin: &str| Issue {
        holder: w.resident,
        name: "code".into(),
        secret: SecretSpec::Pin {
            pin: PinSpec::Manual(pin.into()),
        },
        schedule: Schedule::Permanent,
        doors: vec![w.unit_door],
        include_common_areas: false,
        floors: FloorScope::Any,
    };
    let (a, b) = (issue("7391"), issue("5820"));
    let a = id!(
        out(w.e.apply(&SYS, Command::IssueCredential(a), now)),
        Credential
    );
    let b = id!(
        out(w.e.apply(&SYS, Command::IssueCredential(b), now)),
        Credential
    );
    let ack = |ids: &[CredentialId]| Command::SyncAck {
        device: w.keypad,
        results: ids
            .iter()
            .map(|&credential| SyncResult {
                credential,
                failure: None,
            })
            .collect(),
    };
    w.e.apply(&SYS, ack(&[a, b]), now).unwrap();
    // b is deleted: its removal is in progress on the keypad.
    w.e.apply(&SYS, Command::RevokeCredential { credential: b }, now)
        .unwrap();
    let state = |w: &World, id| {
        w.e.credential(id)
            .unwrap()
            .placement(w.keypad)
            .unwrap()
            .state
    };
    assert_eq!(
        (state(&w, a), state(&w, b)),
        (SyncState::Set, SyncState::Removing)
    );
    let before = w.e.sync_version(w.keypad).unwrap();
    let reset = Command::SyncReset { device: w.keypad };
    assert!(matches!(
        w.e.apply(&Actor::User(w.owner), reset.clone(), now),
        Err(EngineError::Forbidden { .. })
    ));
    let applied = w.e.apply(&SYS, reset, now).unwrap();
    assert_eq!(applied.sync_changed, vec![w.keypad]);
    assert_eq!(
        (state(&w, a), state(&w, b)),
        (SyncState::Pending, SyncState::Removing)
    );
    let batch = w.e.pending_sync(w.keypad).unwrap();
    assert!(batch.version > before, "a new version");
    assert_eq!(
        batch.set.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        vec![a]
    );
    assert_eq!(batch.remove, vec![b]);
    let p = Pin::parse("7391").unwrap();
    assert_eq!(
        w.check(w.keypad, Presented::Pin(p), now).reason(),
        Some(DenyReason::WrongPin),
        "the keypad lost it: not valid there until it has it again"
    );
    w.e.apply(
        &SYS,
        Command::SyncSent {
            device: w.keypad,
            version: batch.version,
        },
        now,
    )
    .unwrap();
    assert_eq!(state(&w, a), SyncState::Setting);
    w.e.apply(&SYS, ack(&[a, b]), now).unwrap();
    assert_eq!(
        (state(&w, a), state(&w, b)),
        (SyncState::Set, SyncState::Removed)
    );
    assert!(w.check(w.keypad, Presented::Pin(p), now).is_granted());
    // The lock was never given its codes (all pending): a reset changes
    // nothing, the version stays and it gets the same batch again.
    let lock_batch = w.e.pending_sync(w.lock).unwrap();
    let applied =
        w.e.apply(&SYS, Command::SyncReset { device: w.lock }, now)
            .unwrap();
    assert_eq!(applied.sync_changed, Vec::<DeviceId>::new());
    assert_eq!(w.e.pending_sync(w.lock).unwrap(), lock_batch);
    assert!(w
        .e
        .apply(
            &SYS,
            Command::SyncReset {
                device: DeviceId(9_999)
            },
            now
        )
        .is_err());
}

#[test]
fn a_code_works_on_a_lock_only_once_the_lock_has_it() {
    let mut w = World::new();
    let now = t0();
    let issue = Issue {
        holder: w.resident,
        name: "new".into(),
        secret: SecretSpec::Pin {
            pin: PinSpec::Manual("7391".into()),
        },
        schedule: Schedule::Permanent,
        doors: vec![w.unit_door],
        include_common_areas: false,
        floors: FloorScope::Any,
    };
    let id = id!(
        out(w.e.apply(&SYS, Command::IssueCredential(issue), now)),
        Credential
    );
    let p = Pin::parse("7391").unwrap();
    let cred = w.e.credential(id).unwrap();
    assert_eq!(cred.placement(w.keypad).unwrap().state, SyncState::Pending);
    assert_eq!(
        w.check(w.keypad, Presented::Pin(p), now).reason(),
        Some(DenyReason::WrongPin),
        "pending: the lock does not know it"
    );
    let batch = w.e.pending_sync(w.keypad).unwrap();
    assert_eq!(batch.set.len(), 1);
    w.e.apply(
        &SYS,
        Command::SyncSent {
            device: w.keypad,
            version: batch.version,
        },
        now,
    )
    .unwrap();
    assert_eq!(
        w.e.credential(id)
            .unwrap()
            .placement(w.keypad)
            .unwrap()
            .state,
        SyncState::Setting
    );
    w.e.apply(
        &SYS,
        Command::SyncAck {
            device: w.keypad,
            results: vec![SyncResult {
                credential: id,
                failure: None,
            }],
        },
        now,
    )
    .unwrap();
    assert_eq!(
        w.e.credential(id)
            .unwrap()
            .placement(w.keypad)
            .unwrap()
            .state,
        SyncState::Set
    );
    assert!(w.check(w.keypad, Presented::Pin(p), now).is_granted());
    // The lock itself (a separate device with its own copy) still reports it pending.
    assert_eq!(
        w.e.credential(id).unwrap().placement(w.lock).unwrap().state,
        SyncState::Pending
    );
    // A failure names its reason.
    w.e.apply(
        &SYS,
        Command::SyncAck {
            device: w.lock,
            results: vec![SyncResult {
                credential: id,
                failure: Some(SyncFailure::LockFull),
            }],
        },
        now,
    )
    .unwrap();
    assert_eq!(
        w.e.credential(id).unwrap().placement(w.lock).unwrap().state,
        SyncState::Failed(SyncFailure::LockFull)
    );
}

#[test]
fn sync_batches_carry_each_codes_validity_for_offline_locks() {
    let mut w = World::new();
    let now = t0();
    let mut issue = |pin: &str, schedule: Schedule| {
        let issue = Issue {
            holder: w.resident,
            name: pin.into(),
            secret: SecretSpec::Pin {
                pin: PinSpec::Manual(pin.into()),
            },
            schedule,
            doors: vec![w.unit_door],
            include_common_areas: false,
            floors: FloorScope::Any,
        };
        id!(
            out(w.e.apply(&SYS, Command::IssueCredential(issue), now)),
            Credential
        )
    };
    let always = issue("7391", Schedule::Permanent);
    let temporary = issue(
        "7392",
        Schedule::Temporary {
            start: now + hours(1),
            end: now + hours(9),
        },
    );
    let window = DailyWindow {
        start: Time::constant(8, 0, 0, 0),
        end: Time::constant(18, 0, 0, 0),
    };
    let days = Weekdays::from_days([Weekday::Monday]);
    let recurring = issue(
        "7393",
        Schedule::Recurring {
            days,
            window,
            start: None,
            end: Some(now + hours(48)),
        },
    );
    let batch = w.e.pending_sync(w.keypad).unwrap();
    assert!(
        !batch.validity.contains_key(&always),
        "permanent: no limits"
    );
    let t = &batch.validity[&temporary];
    assert_eq!(t.not_before_s, Some((now + hours(1)).as_second()));
    assert_eq!(t.not_after_s, Some((now + hours(9)).as_second()));
    assert!(t.weekly.is_none());
    let r = &batch.validity[&recurring];
    assert_eq!(
        (r.not_before_s, r.not_after_s),
        (None, Some((now + hours(48)).as_second()))
    );
    let weekly = r.weekly.as_ref().unwrap();
    assert_eq!((weekly.days, weekly.window), (days, window));
    // The message carries it (the wire form of the same batch).
    let pushes = reference_server::protocol::SyncPush::from_batch(&batch);
    let sent = pushes
        .iter()
        .flat_map(|p| &p.set)
        .find(|c| c.credential == temporary)
        .unwrap();
    assert_eq!(sent.valid.as_ref(), Some(t));
}

#[test]
fn a_changed_pin_replaces_the_old_one_only_when_the_lock_confirms() {
    let mut w = World::new();
    let now = t0();
    let (old, old_pin) = w.pin("2468", Schedule::Permanent);
    let new = id!(
        out(w.e.apply(
            &SYS,
            Command::ChangePin {
                credential: old,
                pin: PinSpec::Manual("1357".into())
            },
            now
        )),
        Credential
    );
    let new_pin = Pin::parse("1357").unwrap();
    // Not yet confirmed: the old code still opens, the new one does not.
    assert!(w.check(w.keypad, Presented::Pin(old_pin), now).is_granted());
    assert_eq!(
        w.check(w.keypad, Presented::Pin(new_pin), now).reason(),
        Some(DenyReason::WrongPin)
    );
    // The keypad confirms the new code: the old one is now being removed but
    // still on the device, so it keeps working until removal is confirmed.
    w.e.apply(
        &SYS,
        Command::SyncAck {
            device: w.keypad,
            results: vec![SyncResult {
                credential: new,
                failure: None,
            }],
        },
        now,
    )
    .unwrap();
    assert!(w.check(w.keypad, Presented::Pin(new_pin), now).is_granted());
    assert_eq!(
        w.e.credential(old)
            .unwrap()
            .placement(w.keypad)
            .unwrap()
            .state,
        SyncState::Removing
    );
    assert!(w.e.pending_sync(w.keypad).unwrap().remove.contains(&old));
    assert!(w.check(w.keypad, Presented::Pin(old_pin), now).is_granted());
    w.ack_all();
    assert_eq!(
        w.check(w.keypad, Presented::Pin(old_pin), now).reason(),
        Some(DenyReason::WrongPin),
        "old code gone"
    );
    assert!(w.check(w.keypad, Presented::Pin(new_pin), now).is_granted());
}

#[test]
fn fallback_codes_work_only_once_given_out() {
    let mut w = World::new();
    let now = t0();
    let lock = w.lock;
    let pins = (0..3).map(|_| PinSpec::Generate { digits: 6 }).collect();
    let made = match out(w
        .e
        .apply(&SYS, Command::LoadFallbackPool { device: lock, pins }, now))
    {
        Outcome::Credentials(v) => v,
        o => panic!("{o:?}"),
    };
    assert_eq!(made.len(), 3);
    let first = w.e.credential(made[0]).unwrap();
    assert_eq!(first.origin, Origin::Fallback);
    let p = first.pin().unwrap();
    assert_eq!(
        w.check(lock, Presented::Pin(p), now).reason(),
        Some(DenyReason::WrongPin),
        "unassigned"
    );
    let schedule = Schedule::Temporary {
        start: now - hours(1),
        end: now + hours(24),
    };
    let id = id!(
        out(w.e.apply(
            &SYS,
            Command::AssignFallback {
                device: lock,
                holder: w.guest,
                name: "Guest".into(),
                schedule
            },
            now
        )),
        Credential
    );
    assert_eq!(id, made[0]);
    match w.check(lock, Presented::Pin(p), now) {
        Decision::Granted(g) => assert_eq!((g.holder, g.origin), (w.guest, Origin::Fallback)),
        d => panic!("{d:?}"),
    }
    assert_eq!(w.e.fallback_pool(lock).len(), 2);
}

#[test]
fn guest_access_includes_common_areas_when_asked() {
    let mut w = World::new();
    let issue = Issue {
        holder: w.guest,
        name: "guest".into(),
        secret: SecretSpec::Card { number: 4242 },
        schedule: Schedule::Permanent,
        doors: vec![w.unit_door],
        include_common_areas: true,
        floors: FloorScope::Any,
    };
    let id = id!(
        out(w.e.apply(&SYS, Command::IssueCredential(issue), t0())),
        Credential
    );
    let c = w.e.credential(id).unwrap();
    assert!(
        c.doors.contains(&w.lobby)
            && c.doors.contains(&w.unit_door)
            && !c.doors.contains(&w.ble_door)
    );
    assert!(
        w.check(w.phone, Presented::Card(4242), t0()).is_granted(),
        "door phone at the lobby"
    );
}

#[test]
fn roles_gate_every_change() {
    let mut w = World::new();
    let now = t0();
    let mk_user = |e: &mut Engine, n: &str| {
        id!(
            out(e.apply(
                &SYS,
                Command::CreateUser {
                    name: n.into(),
                    email: format!("{n}@example.com")
                },
                now
            )),
            User
        )
    };
    let admin = mk_user(&mut w.e, "admin");
    let door_admin = mk_user(&mut w.e, "dooradmin");
    let stranger = mk_user(&mut w.e, "stranger");
    let org = w.org;
    let owner = Actor::User(w.owner);
    w.e.apply(
        &owner,
        Command::SetMember {
            org,
            user: admin,
            role: Role::Admin,
        },
        now,
    )
    .unwrap();
    w.e.apply(
        &owner,
        Command::SetMember {
            org,
            user: door_admin,
            role: Role::DoorAdmin {
                doors: vec![w.unit_door],
            },
        },
        now,
    )
    .unwrap();
    let issue_on = |door: DoorId, holder| {
        Command::IssueCredential(Issue {
            holder,
            name: "x".into(),
            secret: SecretSpec::Pin {
                pin: PinSpec::Generate { digits: 4 },
            },
            schedule: Schedule::Permanent,
            doors: vec![door],
            include_common_areas: false,
            floors: FloorScope::Any,
        })
    };
    let forbidden =
        |r: Result<Applied, EngineError>| matches!(r, Err(EngineError::Forbidden { .. }));
    let (ud, bd, g) = (w.unit_door, w.ble_door, w.guest);
    assert!(w.e.apply(&Actor::User(admin), issue_on(ud, g), now).is_ok());
    assert!(w
        .e
        .apply(&Actor::User(door_admin), issue_on(ud, g), now)
        .is_ok());
    assert!(
        forbidden(w.e.apply(&Actor::User(door_admin), issue_on(bd, g), now)),
        "door admin elsewhere"
    );
    // No role in the organization: its ids are unknown ids to a stranger.
    assert_eq!(
        w.e.apply(&Actor::User(stranger), issue_on(ud, g), now),
        Err(EngineError::NotFound {
            kind: "holder",
            id: g.0
        })
    );
    let site_cmd = Command::CreateSite {
        org,
        name: "B".into(),
        time_zone: "UTC".into(),
        settings: SiteSettings::default(),
    };
    assert!(
        forbidden(w.e.apply(&Actor::User(admin), site_cmd.clone(), now)),
        "admins manage access, not the organization"
    );
    assert!(w.e.apply(&owner, site_cmd, now).is_ok());
    assert!(forbidden(w.e.apply(
        &Actor::User(admin),
        Command::SetMember {
            org,
            user: stranger,
            role: Role::Admin
        },
        now
    )));
    assert!(forbidden(w.e.apply(
        &Actor::User(admin),
        Command::CreateUser {
            name: "n".into(),
            email: "n@x".into()
        },
        now
    )));
    // An organization keeps an owner.
    assert!(w
        .e
        .apply(&owner, Command::RemoveMember { org, user: w.owner }, now)
        .is_err());
}

#[test]
fn remote_open_for_managers_and_for_guests_where_the_lock_allows() {
    let mut w = World::new();
    let now = t0();
    let guest_user = id!(
        out(w.e.apply(
            &SYS,
            Command::CreateUser {
                name: "g".into(),
                email: "g@example.com".into()
            },
            now
        )),
        User
    );
    let org = w.org;
    let holder = id!(
        out(w.e.apply(
            &SYS,
            Command::CreateHolder {
                org,
                name: "G".into(),
                kind: HolderKind::Guest,
                user: Some(guest_user),
                floors: FloorScope::Any
            },
            now
        )),
        Holder
    );
    w.issue(
        holder,
        SecretSpec::Ble,
        Schedule::Temporary {
            start: now - hours(1),
            end: now + hours(1),
        },
        vec![w.unit_door],
    );
    assert!(w
        .e
        .authorize_open(&Actor::User(w.owner), w.lock, now)
        .is_ok());
    assert!(
        w.e.authorize_open(&Actor::User(guest_user), w.lock, now)
            .is_err(),
        "setting off"
    );
    let settings = GuestSettings {
        guest_can_open_remotely: true,
        ..GuestSettings::default()
    };
    let lock = w.lock;
    w.e.apply(
        &SYS,
        Command::UpdateGuestSettings {
            device: lock,
            settings,
        },
        now,
    )
    .unwrap();
    assert!(w
        .e
        .authorize_open(&Actor::User(guest_user), w.lock, now)
        .is_ok());
    assert!(
        w.e.authorize_open(&Actor::User(guest_user), w.lock, now + hours(2))
            .is_err(),
        "credential expired"
    );
}

#[test]
fn bad_input_is_a_typed_error_naming_the_rule() {
    let mut w = World::new();
    let now = t0();
    let org = w.org;
    let cases: Vec<(Command, &str)> = vec![
        (
            Command::CreateSite {
                org,
                name: "x".into(),
                time_zone: "Mars/Olympus".into(),
                settings: SiteSettings::default(),
            },
            "time_zone",
        ),
        (
            Command::CreateSite {
                org,
                name: "".into(),
                time_zone: "UTC".into(),
                settings: SiteSettings::default(),
            },
            "name",
        ),
        (
            Command::CreateSite {
                org,
                name: "x".into(),
                time_zone: "UTC".into(),
                settings: SiteSettings {
                    lockout: LockoutPolicy {
                        max_wrong: 0,
                        window_s: 1,
                        lockout_s: 1,
                    },
                    ..SiteSettings::default()
                },
            },
            "settings.lockout",
        ),
        (
            Command::CreateDoor {
                site: SiteId(77),
                name: "x".into(),
                common_area: false,
                unit: None,
                lift_floors: vec![],
            },
            "site",
        ),
        (
            Command::IssueCredential(Issue {
                holder: w.guest,
                name: "x".into(),
                secret: SecretSpec::Qr,
                schedule: Schedule::Temporary {
                    start: now,
                    end: now,
                },
                doors: vec![w.lobby],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
            "schedule",
        ),
        (
            Command::IssueCredential(Issue {
                holder: w.guest,
                name: "x".into(),
                secret: SecretSpec::Qr,
                schedule: Schedule::Permanent,
                doors: vec![],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
            "doors",
        ),
        (Command::CheckIn { stay: StayId(5) }, "stay"),
        (
            Command::SyncAck {
                device: w.lock,
                results: vec![SyncResult {
                    credential: CredentialId(4_000),
                    failure: None,
                }],
            },
            "credential",
        ),
    ];
    for (cmd, field) in cases {
        let err =
            w.e.apply(&SYS, cmd.clone(), now)
                .expect_err(&format!("{cmd:?}"));
        assert_eq!(err.field(), field, "{cmd:?}: {err}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn the_same_seed_generates_the_same_codes() {
    let pins = |seed| {
        let mut w = World::with_seed(seed);
        (0..20)
            .map(|_| {
                let id = w.issue(
                    w.guest,
                    SecretSpec::Pin {
                        pin: PinSpec::Generate { digits: 6 },
                    },
                    Schedule::Permanent,
                    vec![w.unit_door],
                );
                w.e.credential(id).unwrap().pin().unwrap().reveal()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(pins(1), pins(1));
    assert_ne!(pins(1), pins(2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    // However many threads race for a limited credential, the grants never
    // exceed its uses, and exactly that many succeed.
    #[test]
    fn use_counts_never_grant_more_than_allowed(max_uses in 1u32..20, threads in 2usize..6, tries in 1usize..40, per_door in any::<bool>()) {
        let mut w = World::new();
        let now = t0();
        let schedule = if per_door {
            Schedule::Visitor { repeat: Repeat::Never, start: now - hours(1), end: now + hours(1), days: None, window: None, each_door_count: Some(max_uses) }
        } else {
            Schedule::Delivery { start: now - hours(1), end: now + hours(1), max_uses: Some(max_uses) }
        };
        let id = w.issue(w.guest, SecretSpec::Qr, schedule, vec![w.lobby, w.ble_door]);
        let token = w.e.token(id).unwrap();
        let engine = Arc::new(w.e);
        let granted = Arc::new(AtomicU32::new(0));
        let devices = [w.phone, w.ble_lock];
        std::thread::scope(|s| {
            for t in 0..threads {
                let (engine, granted, token) = (engine.clone(), granted.clone(), token.clone());
                s.spawn(move || {
                    for i in 0..tries {
                        let device = devices[(t + i) % 2];
                        let d = engine.validate(&Check { device, presented: Presented::Qr(&token), floor: None }, now);
                        if d.is_granted() {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let attempts = (threads * tries) as u32;
        let allowed = if per_door {
            // Each door has its own count; attempts alternate between doors.
            let mut n = [0u32; 2];
            for t in 0..threads { for i in 0..tries { n[(t + i) % 2] += 1; } }
            n[0].min(max_uses) + n[1].min(max_uses)
        } else {
            attempts.min(max_uses)
        };
        prop_assert_eq!(granted.load(Ordering::Relaxed), allowed);
    }
}

/// A second organization with its own site, building, floor, unit, door,
/// lock, holder, stay and code, owned by a user of its own.
struct Elsewhere {
    owner: UserId,
    site: SiteId,
    floor: FloorId,
    unit: UnitId,
    door: DoorId,
    lock: DeviceId,
    holder: HolderId,
    stay: StayId,
    code: CredentialId,
}

fn elsewhere(w: &mut World) -> Elsewhere {
    let now = t0();
    let e = &mut w.e;
    let owner = id!(
        out(e.apply(
            &SYS,
            Command::CreateUser {
                name: "Bea".into(),
                email: "b@example.com".into()
            },
            now
        )),
        User
    );
    let org = id!(
        out(e.apply(
            &SYS,
            Command::CreateOrganization {
                name: "Elsewhere".into(),
                description: String::new(),
                owner,
                personal: false
            },
            now
        )),
        Organization
    );
    let mut made = |cmd| out(e.apply(&SYS, cmd, now));
    let site = id!(
        made(Command::CreateSite {
            org,
            name: "B".into(),
            time_zone: "UTC".into(),
            settings: SiteSettings::default()
        }),
        Site
    );
    let building = id!(
        made(Command::CreateBuilding {
            site,
            name: "B".into()
        }),
        Building
    );
    let floor = id!(
        made(Command::CreateFloor {
            building,
            number: 9
        }),
        Floor
    );
    let unit = id!(
        made(Command::CreateUnit {
            floor,
            name: "9A".into()
        }),
        Unit
    );
    let door = id!(
        made(Command::CreateDoor {
            site,
            name: "B door".into(),
            common_area: false,
            unit: Some(unit),
            lift_floors: vec![floor]
        }),
        Door
    );
    let lock = id!(
        made(Command::CreateDevice {
            door,
            kind: DeviceKind::Lock,
            connectivity: Connectivity::Wifi,
            name: "B lock".into(),
            location: String::new(),
            linked_to: None,
            code_slots: 10
        }),
        Device
    );
    let holder = id!(
        made(Command::CreateHolder {
            org,
            name: "B guest".into(),
            kind: HolderKind::Guest,
            user: None,
            floors: FloorScope::Any
        }),
        Holder
    );
    let stay = id!(
        made(Command::CreateStay {
            holder,
            check_in_at: now,
            check_out_at: now + hours(24)
        }),
        Stay
    );
    let code = id!(
        made(Command::IssueCredential(Issue {
            holder,
            name: "B code".into(),
            secret: SecretSpec::Qr,
            schedule: Schedule::Permanent,
            doors: vec![door],
            include_common_areas: false,
            floors: FloorScope::Any
        })),
        Credential
    );
    Elsewhere {
        owner,
        site,
        floor,
        unit,
        door,
        lock,
        holder,
        stay,
        code,
    }
}

/// Every id a command's body names must be of the command's organization:
/// one of another organization is refused exactly as an unknown id is, for
/// anyone (the system included), and nothing changes.
#[test]
fn ids_of_another_organization_in_a_body_answer_as_unknown_ones() {
    let mut w = World::new();
    let b = elsewhere(&mut w);
    let now = t0();
    const UNKNOWN: u32 = 99_999;
    let (org, site, door) = (w.org, w.site, w.unit_door);
    let (guest, lock) = (w.guest, w.lock);
    // (what, the command naming `x`, the other organization's id)
    type Make = Box<dyn Fn(u32) -> Command>;
    let issue = move |doors: Vec<DoorId>, schedule: Schedule, floors: FloorScope| {
        Command::IssueCredential(Issue {
            holder: guest,
            name: "x".into(),
            secret: SecretSpec::Qr,
            schedule,
            doors,
            include_common_areas: false,
            floors,
        })
    };
    let cases: Vec<(&str, Make, u32)> = vec![
        (
            "door admin's doors",
            Box::new(move |x| Command::SetMember {
                org,
                user: UserId(0),
                role: Role::DoorAdmin {
                    doors: vec![DoorId(x)],
                },
            }),
            b.door.0,
        ),
        (
            "door's unit",
            Box::new(move |x| Command::CreateDoor {
                site,
                name: "d".into(),
                common_area: false,
                unit: Some(UnitId(x)),
                lift_floors: vec![],
            }),
            b.unit.0,
        ),
        (
            "door's lift floors",
            Box::new(move |x| Command::CreateDoor {
                site,
                name: "d".into(),
                common_area: false,
                unit: None,
                lift_floors: vec![FloorId(x)],
            }),
            b.floor.0,
        ),
        (
            "device's lock",
            Box::new(move |x| Command::CreateDevice {
                door,
                kind: DeviceKind::Keypad,
                connectivity: Connectivity::Wifi,
                name: "k".into(),
                location: String::new(),
                linked_to: Some(DeviceId(x)),
                code_slots: 10,
            }),
            b.lock.0,
        ),
        (
            "holder's floors",
            Box::new(move |x| Command::CreateHolder {
                org,
                name: "h".into(),
                kind: HolderKind::Member,
                user: None,
                floors: FloorScope::Only(vec![FloorId(x)]),
            }),
            b.floor.0,
        ),
        (
            "holder followed",
            Box::new(move |x| Command::CreateHolder {
                org,
                name: "h".into(),
                kind: HolderKind::Member,
                user: None,
                floors: FloorScope::FollowHolder(HolderId(x)),
            }),
            b.holder.0,
        ),
        (
            "code's doors",
            Box::new(move |x| issue(vec![DoorId(x)], Schedule::Permanent, FloorScope::Any)),
            b.door.0,
        ),
        (
            "code's stay",
            Box::new(move |x| {
                issue(
                    vec![door],
                    Schedule::Stay { stay: StayId(x) },
                    FloorScope::Any,
                )
            }),
            b.stay.0,
        ),
        (
            "code's floors",
            Box::new(move |x| {
                issue(
                    vec![door],
                    Schedule::Permanent,
                    FloorScope::Only(vec![FloorId(x)]),
                )
            }),
            b.floor.0,
        ),
        (
            "fallback code's holder",
            Box::new(move |x| Command::AssignFallback {
                device: lock,
                holder: HolderId(x),
                name: "f".into(),
                schedule: Schedule::Permanent,
            }),
            b.holder.0,
        ),
    ];
    let owner = Actor::User(w.owner);
    for (what, make, theirs) in &cases {
        for actor in [SYS, owner] {
            let credentials = w.e.credentials().len();
            let got = w.e.apply(&actor, make(*theirs), now);
            let unknown = w.e.apply(&actor, make(UNKNOWN), now);
            let (
                Err(EngineError::NotFound { kind, .. }),
                Err(EngineError::NotFound { kind: k2, .. }),
            ) = (&got, &unknown)
            else {
                panic!("{what} as {actor:?}: {got:?} / {unknown:?}");
            };
            assert_eq!(kind, k2, "{what}");
            assert_eq!(w.e.credentials().len(), credentials, "{what}: nothing made");
        }
    }
    // The ids a command is about: another organization's are unknown ids
    // to a user without a role there, and a forbidden action to one with.
    let cases: Vec<(Command, Ref)> = vec![
        (
            Command::RevokeCredential { credential: b.code },
            Ref::Credential(b.code),
        ),
        (Command::CheckIn { stay: b.stay }, Ref::Stay(b.stay)),
        (
            Command::CreateBuilding {
                site: b.site,
                name: "x".into(),
            },
            Ref::Site(b.site),
        ),
    ];
    for (cmd, r) in cases {
        assert_eq!(
            w.e.apply(&owner, cmd.clone(), now),
            Err(EngineError::NotFound {
                kind: r.kind(),
                id: r.id()
            }),
            "{cmd:?}"
        );
        assert_eq!(
            w.e.resolve(&owner, r),
            Err(EngineError::NotFound {
                kind: r.kind(),
                id: r.id()
            })
        );
        assert_eq!(w.e.resolve(&Actor::User(b.owner), r), w.e.org_of(r));
    }
    // A door phone of the first organization asked for the other's floor:
    // a floor it does not serve, as an unknown floor would be.
    let (_, pin) = w.pin("4829", Schedule::Permanent);
    for floor in [b.floor, FloorId(UNKNOWN)] {
        let d = w.e.validate(
            &Check {
                device: w.keypad,
                presented: Presented::Pin(pin),
                floor: Some(floor),
            },
            now,
        );
        assert_eq!(reason(d), Some(DenyReason::FloorNotAllowed));
    }
    // A sync ack naming a code of another organization: unknown.
    let ack = |c| Command::SyncAck {
        device: lock,
        results: vec![SyncResult {
            credential: c,
            failure: None,
        }],
    };
    assert_eq!(
        w.e.apply(&SYS, ack(b.code), now),
        Err(EngineError::NotFound {
            kind: "credential",
            id: b.code.0
        })
    );
    assert_eq!(
        w.e.apply(&SYS, ack(CredentialId(UNKNOWN)), now),
        Err(EngineError::NotFound {
            kind: "credential",
            id: UNKNOWN
        })
    );
}

/// Same-organization references must also be of the door's own site.
#[test]
fn a_doors_unit_and_lift_floors_are_on_its_site() {
    let mut w = World::new();
    let now = t0();
    let org = w.org;
    let other = id!(
        out(w.e.apply(
            &SYS,
            Command::CreateSite {
                org,
                name: "Annex".into(),
                time_zone: "UTC".into(),
                settings: SiteSettings::default()
            },
            now
        )),
        Site
    );
    let door = |unit, lift_floors| Command::CreateDoor {
        site: other,
        name: "Annex door".into(),
        common_area: false,
        unit,
        lift_floors,
    };
    let unit = match w.e.doors()[w.unit_door.index()].unit {
        Some(u) => u,
        None => panic!("the unit door has a unit"),
    };
    let err = w.e.apply(&SYS, door(Some(unit), vec![]), now).unwrap_err();
    assert_eq!(err.field(), "unit", "{err}");
    let err =
        w.e.apply(&SYS, door(None, vec![w.floor_2]), now)
            .unwrap_err();
    assert_eq!(err.field(), "lift_floors", "{err}");
}

/// seeds/003: guest codes (permanent, temporary, recurring, delivery) are
/// randomly generated and not customizable. A custom or typed-in PIN for a
/// guest, courier or visitor is refused naming the rule; members keep
/// custom PINs; a guest's code can be changed to another generated one.
#[test]
fn guests_codes_are_generated_never_custom() {
    let mut w = World::new();
    let now = t0();
    let org = w.org;
    let mut holder = |kind| {
        id!(
            out(w.e.apply(
                &SYS,
                Command::CreateHolder {
                    org,
                    name: format!("{kind:?}"),
                    kind,
                    user: None,
                    floors: FloorScope::Any
                },
                now
            )),
            Holder
        )
    };
    let holders = [
        holder(HolderKind::Guest),
        holder(HolderKind::Courier),
        holder(HolderKind::Visitor),
    ];
    let schedules = [
        Schedule::Permanent,
        Schedule::Temporary {
            start: now,
            end: now + hours(2),
        },
        Schedule::Delivery {
            start: now,
            end: now + hours(2),
            max_uses: Some(3),
        },
    ];
    let issue = |holder, pin, schedule: &Schedule| {
        Command::IssueCredential(Issue {
            holder,
            name: "c".into(),
            secret: SecretSpec::Pin { pin },
            schedule: schedule.clone(),
            doors: vec![w.unit_door],
            include_common_areas: false,
            floors: FloorScope::Any,
        })
    };
    for h in holders {
        for sch in &schedules {
            for typed in [
                PinSpec::Custom("4829".into()),
                PinSpec::Manual("4829".into()),
            ] {
                for actor in [SYS, Actor::User(w.owner)] {
                    let err = w.e.apply(&actor, issue(h, typed.clone(), sch), now);
                    assert_eq!(
                        err.map(|_| ()),
                        Err(EngineError::Pin(PinRuleError::GuestCodeGenerated)),
                        "{h} {sch:?} {typed:?}"
                    );
                }
            }
        }
    }
    let guest = holders[0];
    let code = id!(
        out(w.e.apply(
            &SYS,
            issue(guest, PinSpec::Generate { digits: 4 }, &Schedule::Permanent),
            now
        )),
        Credential
    );
    let change = |pin| Command::ChangePin {
        credential: code,
        pin,
    };
    assert_eq!(
        w.e.apply(&SYS, change(PinSpec::Custom("4829".into())), now)
            .map(|_| ()),
        Err(EngineError::Pin(PinRuleError::GuestCodeGenerated))
    );
    w.e.apply(&SYS, change(PinSpec::Generate { digits: 6 }), now)
        .expect("a generated replacement");
    // A member's custom PIN stands.
    let resident = w.resident;
    w.e.apply(
        &SYS,
        issue(
            resident,
            PinSpec::Custom("4829".into()),
            &Schedule::Permanent,
        ),
        now,
    )
    .expect("members pick their own");
    assert!(PinRuleError::GuestCodeGenerated
        .to_string()
        .contains("generated"));
}

/// Control characters (C0 with NUL, DEL, C1) and bidirectional overrides
/// or isolates are refused in every name-like field, naming it; the text
/// never appears in the error. Ordinary Unicode names pass.
#[test]
fn names_refuse_control_characters_and_bidi_overrides() {
    let mut w = World::new();
    let now = t0();
    let (org, site, door, lock) = (w.org, w.site, w.unit_door, w.lock);
    let bad = [
        '\0', '\u{7}', '\n', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}', '\u{202a}', '\u{202e}',
        '\u{2066}', '\u{2069}',
    ];
    type Make = Box<dyn Fn(String) -> Command>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "name",
            Box::new(|x| Command::CreateUser {
                name: x,
                email: "a@example.com".into(),
            }),
        ),
        (
            "email",
            Box::new(|x| Command::CreateUser {
                name: "A".into(),
                email: format!("a{x}@example.com"),
            }),
        ),
        (
            "description",
            Box::new(move |x| Command::UpdateOrganization {
                org,
                name: "Maple".into(),
                description: x,
            }),
        ),
        (
            "name",
            Box::new(move |x| Command::CreateSite {
                org,
                name: x,
                time_zone: "UTC".into(),
                settings: SiteSettings::default(),
            }),
        ),
        (
            "name",
            Box::new(move |x| Command::CreateBuilding { site, name: x }),
        ),
        (
            "name",
            Box::new(move |x| Command::CreateDoor {
                site,
                name: x,
                common_area: false,
                unit: None,
                lift_floors: vec![],
            }),
        ),
        (
            "location",
            Box::new(move |x| Command::CreateDevice {
                door,
                kind: DeviceKind::DoorSensor,
                connectivity: Connectivity::Wifi,
                name: "s".into(),
                location: x,
                linked_to: None,
                code_slots: 0,
            }),
        ),
        (
            "listing",
            Box::new(move |x| Command::LinkListing {
                device: lock,
                listing: x,
            }),
        ),
        (
            "name",
            Box::new(move |x| Command::CreateHolder {
                org,
                name: x,
                kind: HolderKind::Member,
                user: None,
                floors: FloorScope::Any,
            }),
        ),
    ];
    for (field, make) in &cases {
        for c in bad {
            let text = format!("Mallory{c}Admin");
            let err = w.e.apply(&SYS, make(text.clone()), now).unwrap_err();
            assert_eq!(err.field(), *field, "U+{:04X}: {err}", u32::from(c));
            let msg = err.to_string();
            assert!(
                msg.contains("control characters") && !msg.contains("Mallory"),
                "{msg}"
            );
        }
        w.e.apply(&SYS, make("Müller · Café 北 — 3A".into()), now)
            .unwrap_or_else(|e| panic!("{field}: {e}"));
    }
}

/// docs/protocol.md lists the deny reasons a device can get; the enum is
/// the source, and the list must be exactly its names, in its order.
#[test]
fn the_protocol_doc_lists_exactly_the_engines_deny_reasons() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .unwrap();
    let marker = "`DenyReason::as_str`:";
    let start = doc.find(marker).expect("the reason list's marker") + marker.len();
    let end = start + doc[start..].find(')').expect("the list ends with `)`");
    let listed: Vec<&str> = doc[start..end].split('`').skip(1).step_by(2).collect();
    let names: Vec<&str> = reference_server::domain::DenyReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(
        listed, names,
        "docs/protocol.md's deny reasons and DenyReason::ALL differ"
    );
}

#[test]
fn a_card_is_read_on_every_device_of_its_doors_and_only_there() {
    let mut w = World::new();
    let old = w.issue(
        w.resident,
        SecretSpec::Card { number: 5150 },
        Schedule::Permanent,
        vec![w.unit_door],
    );
    let card = Presented::Card(5150);
    assert!(w.check(w.lock, card, t0()).is_granted(), "its door's lock");
    assert_eq!(
        reason(w.check(w.phone, card, t0())),
        Some(DenyReason::DoorNotAllowed),
        "another door of the site"
    );
    assert_eq!(
        reason(w.check(w.lock, Presented::Card(5151), t0())),
        Some(DenyReason::UnknownCredential)
    );
    // A device added at the door later reads it too (a door phone stores
    // no codes, so at once); deleting it takes its entry away.
    let added = id!(
        out(w.e.apply(
            &SYS,
            Command::CreateDevice {
                door: w.unit_door,
                kind: DeviceKind::DoorPhone,
                connectivity: Connectivity::Wifi,
                name: "second phone".into(),
                location: "Apartment door".into(),
                linked_to: None,
                code_slots: 0,
            },
            t0()
        )),
        Device
    );
    assert!(
        w.check(added, card, t0()).is_granted(),
        "a device added later"
    );
    w.e.apply(&SYS, Command::DeleteDevice { device: added }, t0())
        .unwrap();
    assert!(!w.check(added, card, t0()).is_granted(), "a deleted device");
    assert!(w.check(w.lock, card, t0()).is_granted());
    // Revoked: denied as such while the lock still holds it; the number
    // may then go to a credential of another door, which takes it over.
    w.e.apply(&SYS, Command::RevokeCredential { credential: old }, t0())
        .unwrap();
    assert_eq!(
        reason(w.check(w.lock, card, t0())),
        Some(DenyReason::Revoked)
    );
    w.issue(
        w.resident,
        SecretSpec::Card { number: 5150 },
        Schedule::Permanent,
        vec![w.lobby],
    );
    assert!(w.check(w.phone, card, t0()).is_granted(), "the new door");
    assert_eq!(
        reason(w.check(w.lock, card, t0())),
        Some(DenyReason::DoorNotAllowed),
        "the old door, once the number moved"
    );
}
