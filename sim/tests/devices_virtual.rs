//! Device behaviour in virtual time (paused tokio runtime): every test is
//! deterministic and independent of machine speed.

mod devices_support;

use devices_support::*;
use fleetsim::devices::fleet::DeviceAddr;
use fleetsim::devices::fleet::FleetSpec;
use fleetsim::devices::keypad::{Key, Keypress};
use fleetsim::devices::{Control, DeviceOutcome, DeviceParams, Present};
use reference_server::domain::{DenyReason, LockoutPolicy};
use reference_server::protocol::{CommandKind, DeviceCommand, SimAction, Verdict, WireCredential};
use tokio::time::Instant;

fn pin(s: &str) -> WireCredential {
    WireCredential::Pin(s.into())
}

#[test]
fn a_granted_pin_unlocks_the_door_opens_and_closes_and_the_lock_relocks() {
    run_virtual(|| async {
        let spec = FleetSpec::new(11)
            .wifi_doors(1)
            .params(DeviceParams::quiet().with_trace(true));
        let s = inproc_fleet(&spec);
        let plan = s.fleet.provisioned.doors[0].clone();
        let (lock, keypad, sensor) = (
            plan.lock.unwrap(),
            plan.keypad.unwrap(),
            plan.sensor.unwrap(),
        );
        issue_pin(&s, plan.door, "4829");
        assert_eq!(s.fleet.push_sync(), 2, "lock and keypad get the code");
        wait_s(1.0).await;
        assert_eq!(s.fleet.snapshot(keypad).await.unwrap().cached_codes, 1);

        let got = s.fleet.present(keypad, pin("4829")).await.unwrap();
        let unlocked_at = Instant::now();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
        assert_eq!(got.response.unwrap().decision, Verdict::Granted);
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert_eq!(l.state, "unlocked");
        let relock_s = l.relock_after_s.unwrap();
        assert!((7.0..=60.0).contains(&relock_s));

        // The door opens 1-3 s after the unlock and closes 3-10 s later.
        tokio::time::sleep_until(unlocked_at + secs(3.5)).await;
        assert_eq!(s.fleet.snapshot(sensor).await.unwrap().state, "open");
        tokio::time::sleep_until(unlocked_at + secs(13.5)).await;
        let sn = s.fleet.snapshot(sensor).await.unwrap();
        assert_eq!(sn.state, "closed");
        assert_eq!(sn.emitted.get("door_opened"), 1);
        assert_eq!(sn.emitted.get("door_closed"), 1);
        assert_eq!(sn.emitted.get("door_forced_open"), 0);

        // Never relocked before its delay; relocked once the delay is over
        // and the door is closed.
        tokio::time::sleep_until(unlocked_at + secs(relock_s - 0.5)).await;
        if relock_s - 0.5 > 13.5 {
            assert_eq!(s.fleet.snapshot(lock).await.unwrap().state, "unlocked");
        }
        tokio::time::sleep_until(unlocked_at + secs(relock_s.max(13.0) + 0.5)).await;
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert_eq!(l.state, "locked");
        assert_eq!(l.emitted.get("unlocked"), 1);
        assert_eq!(l.emitted.get("locked"), 1);

        // The engine logged exactly what the lock emitted.
        let logged = s.transport.log().device(lock);
        assert_eq!(logged.per_kind, l.emitted);
        assert_eq!(
            (logged.last_seq, logged.duplicates, logged.gaps),
            (l.seq, 0, 0)
        );
    });
}

fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s)
}

#[test]
fn wrong_pins_lock_the_keypad_out_until_the_lockout_ends() {
    run_virtual(|| async {
        let s = inproc_fleet(
            &FleetSpec::new(12)
                .wifi_doors(1)
                .params(DeviceParams::quiet()),
        );
        let plan = s.fleet.provisioned.doors[0].clone();
        let keypad = plan.keypad.unwrap();
        issue_pin(&s, plan.door, "4829");
        s.fleet.push_sync();
        wait_s(1.0).await;
        // Default policy: 5 wrong tries in 60 s lock the keypad for 30 s.
        for _ in 0..5 {
            let got = s.fleet.present(keypad, pin("1357")).await.unwrap();
            assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::WrongPin));
        }
        let k = s.fleet.snapshot(keypad).await.unwrap();
        assert_eq!(k.state, "locked_out");
        assert_eq!(k.emitted.get("keypad_locked_out"), 1);
        assert!(s
            .engine
            .read()
            .locked_until(keypad, s.clock.now())
            .is_some());
        // Even the right code is refused, without asking the engine.
        let got = s.fleet.present(keypad, pin("4829")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::LockedOut));
        assert!(got.decided_locally);
        wait_s(31.0).await;
        let got = s.fleet.present(keypad, pin("4829")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
    });
}

/// A keypad that asks the engine keeps the engine's lockout: it counts no
/// wrong tries itself (its own policy here would lock at the first) and
/// refuses PINs until the `locked_until` the engine's answer gave, not for
/// a duration of its own from when it heard it.
#[test]
fn an_online_keypad_ends_its_lockout_when_the_engine_does() {
    run_virtual(|| async {
        let mut params = DeviceParams::quiet();
        params.keypad.lockout = LockoutPolicy {
            max_wrong: 1,
            window_s: 60,
            lockout_s: 300,
        };
        let s = inproc_fleet(&FleetSpec::new(16).wifi_doors(1).params(params));
        let plan = s.fleet.provisioned.doors[0].clone();
        let keypad = plan.keypad.unwrap();
        issue_pin(&s, plan.door, "4829");
        s.fleet.push_sync();
        wait_s(1.0).await;
        // The site's policy: 5 wrong tries in 60 s lock for 30 s.
        for _ in 0..4 {
            let got = s.fleet.present(keypad, pin("1357")).await.unwrap();
            assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::WrongPin));
            assert_eq!(got.response.unwrap().locked_until, None);
            wait_s(0.4).await;
        }
        let got = s.fleet.present(keypad, pin("1357")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::WrongPin));
        let end = got
            .response
            .unwrap()
            .locked_until
            .expect("the locking try says until when");
        assert_eq!(
            Some(end),
            s.engine.read().locked_until(keypad, s.clock.now())
        );
        assert_eq!(end.as_second(), s.clock.now().as_second() + 30);
        let k = s.fleet.snapshot(keypad).await.unwrap();
        assert_eq!(
            (k.state, k.emitted.get("keypad_locked_out")),
            ("locked_out", 1)
        );
        // Refused on the keypad until the engine's end, to the second.
        let before_end =
            (end.as_second() as f64 - 0.5) - s.clock.now().as_millisecond() as f64 / 1e3;
        wait_s(before_end).await;
        // Presented at once (no typing time), to hit the second.
        let at_once = |c| Present {
            credential: c,
            floor: None,
            human_timing: false,
        };
        let got = s
            .fleet
            .present_with(keypad, at_once(pin("4829")))
            .await
            .unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::LockedOut));
        assert!(got.decided_locally);
        wait_s(0.6).await;
        let got = s
            .fleet
            .present_with(keypad, at_once(pin("4829")))
            .await
            .unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
        assert_eq!(
            s.fleet
                .snapshot(keypad)
                .await
                .unwrap()
                .emitted
                .get("keypad_locked_out"),
            1
        );
    });
}

/// A Bluetooth lock decides PINs from its cache and keeps its own lockout,
/// by the policy it was given (the site's, in a run).
#[test]
fn a_ble_lock_deciding_alone_locks_out_by_its_policy() {
    run_virtual(|| async {
        let mut params = DeviceParams::quiet();
        params.lock.ble_in_range_every_s = fleetsim::devices::Span::new(1e9, 1e9);
        params.keypad.lockout = LockoutPolicy {
            max_wrong: 2,
            window_s: 60,
            lockout_s: 10,
        };
        let s = inproc_fleet(&FleetSpec::new(17).ble_doors(1).params(params));
        let plan = s.fleet.provisioned.doors[0].clone();
        let lock = plan.lock.unwrap();
        issue_pin(&s, plan.door, "4829");
        s.fleet.control(lock, Control::SyncNow).unwrap();
        wait_s(1.0).await;
        for _ in 0..2 {
            let got = s.fleet.present(lock, pin("1357")).await.unwrap();
            assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::WrongPin));
            assert!(got.decided_locally);
        }
        assert_eq!(
            s.fleet
                .snapshot(lock)
                .await
                .unwrap()
                .emitted
                .get("keypad_locked_out"),
            1
        );
        let got = s.fleet.present(lock, pin("4829")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::LockedOut));
        // The engine never heard of it: its lockout is the lock's own.
        assert_eq!(s.engine.read().locked_until(lock, s.clock.now()), None);
        wait_s(10.5).await;
        let got = s.fleet.present(lock, pin("4829")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
    });
}

#[test]
fn a_keypad_entry_is_cleared_after_idle_seconds() {
    run_virtual(|| async {
        let s = inproc_fleet(
            &FleetSpec::new(13)
                .wifi_doors(1)
                .params(DeviceParams::quiet()),
        );
        let plan = s.fleet.provisioned.doors[0].clone();
        issue_pin(&s, plan.door, "4829");
        s.fleet.push_sync();
        wait_s(1.0).await;
        let DeviceAddr::Keypad(k) = s.fleet.device(plan.keypad.unwrap()).unwrap().addr.clone()
        else {
            panic!("not a keypad")
        };
        let press = |key| k.send(Keypress(key));
        for d in [4, 8] {
            assert_eq!(press(Key::Digit(d)).await.unwrap().unwrap(), None);
        }
        wait_s(6.0).await; // past the 5 s idle clear: "48" is gone
        for d in [2, 9] {
            press(Key::Digit(d)).await.unwrap().unwrap();
        }
        let got = press(Key::Enter).await.unwrap().unwrap().unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::WrongPin));
        for d in [4, 8, 2, 9] {
            press(Key::Digit(d)).await.unwrap().unwrap();
            wait_s(0.8).await;
        }
        let got = press(Key::Enter).await.unwrap().unwrap().unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
    });
}

#[test]
fn an_offline_ble_lock_keeps_granting_cached_codes_and_learns_new_ones_by_sync() {
    run_virtual(|| async {
        let mut params = DeviceParams::quiet();
        // No phone or gateway comes by unless the test says so.
        params.lock.ble_in_range_every_s = fleetsim::devices::Span::new(1e9, 1e9);
        let s = inproc_fleet(&FleetSpec::new(14).ble_doors(1).params(params));
        let plan = s.fleet.provisioned.doors[0].clone();
        let lock = plan.lock.unwrap();
        issue_pin(&s, plan.door, "4829");
        assert_eq!(s.fleet.push_sync(), 0, "a Bluetooth lock is out of reach");
        s.fleet.control(lock, Control::SyncNow).unwrap();
        wait_s(1.0).await;
        assert_eq!(s.fleet.snapshot(lock).await.unwrap().cached_codes, 1);

        s.fleet
            .control(lock, Control::GoOffline { for_s: 3_600.0 })
            .unwrap();
        wait_s(1.0).await;
        let got = s.fleet.present(lock, pin("4829")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
        assert!(got.decided_locally && got.response.is_none());

        issue_pin(&s, plan.door, "7315");
        let got = s.fleet.present(lock, pin("7315")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::WrongPin));
        s.fleet.control(lock, Control::SyncNow).unwrap(); // offline: no sync
        wait_s(120.0).await;
        let got = s.fleet.present(lock, pin("7315")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::WrongPin));

        wait_s(3_600.0).await; // back online; a phone comes by
        s.fleet.control(lock, Control::SyncNow).unwrap();
        wait_s(1.0).await;
        let got = s.fleet.present(lock, pin("7315")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert_eq!(l.cached_codes, 2);
        // Events kept while offline reached the engine after reconnecting.
        wait_s(120.0).await;
        let l = s.fleet.snapshot(lock).await.unwrap();
        let logged = s.transport.log().device(lock);
        assert_eq!((logged.accepted, logged.gaps), (l.seq, 0));
        assert_eq!(logged.per_kind, l.emitted);
    });
}

#[test]
fn going_online_ends_an_offline_spell_and_delivers_the_buffered_events() {
    run_virtual(|| async {
        let mut params = DeviceParams::quiet();
        params.lock.ble_in_range_every_s = fleetsim::devices::Span::new(1e9, 1e9);
        let s = inproc_fleet(&FleetSpec::new(16).ble_doors(1).params(params));
        let plan = s.fleet.provisioned.doors[0].clone();
        let lock = plan.lock.unwrap();
        issue_pin(&s, plan.door, "4829");
        s.fleet.control(lock, Control::SyncNow).unwrap();
        wait_s(1.0).await;
        s.fleet
            .control(lock, Control::GoOffline { for_s: 600.0 })
            .unwrap();
        wait_s(1.0).await;
        let got = s.fleet.present(lock, pin("4829")).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
        wait_s(60.0).await; // relocked: "unlocked" and "locked" are held
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert!(!l.online);
        assert!(s.transport.log().device(lock).accepted < l.seq);

        // Ended early (as at the end of a run): everything is delivered.
        s.fleet.control(lock, Control::GoOnline).unwrap();
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert!(l.online);
        let logged = s.transport.log().device(lock);
        assert_eq!((logged.accepted, logged.gaps), (l.seq, 0));
        assert_eq!(logged.per_kind, l.emitted);

        // The ended spell's timer (due at 600 s) does not end a later one.
        s.fleet
            .control(lock, Control::GoOffline { for_s: 3_600.0 })
            .unwrap();
        wait_s(900.0).await;
        assert!(!s.fleet.snapshot(lock).await.unwrap().online);
        wait_s(3_000.0).await;
        assert!(s.fleet.snapshot(lock).await.unwrap().online);
    });
}

#[test]
fn an_offline_ble_lock_checks_each_cached_codes_validity_on_its_own_clock() {
    use jiff::SignedDuration;
    use reference_server::domain::{DailyWindow, Schedule, Weekdays};
    run_virtual(|| async {
        let mut params = DeviceParams::quiet();
        params.lock.ble_in_range_every_s = fleetsim::devices::Span::new(1e9, 1e9);
        let s = inproc_fleet(&FleetSpec::new(15).ble_doors(1).params(params));
        let plan = s.fleet.provisioned.doors[0].clone();
        let lock = plan.lock.unwrap();
        let now = s.clock.now();
        let hours = SignedDuration::from_hours;
        let tz = {
            let e = s.engine.read();
            let site = e.door(plan.door).unwrap().site;
            e.site(site).unwrap().tz.clone()
        };
        // A daily window from 30 to 90 minutes after now, local time.
        let local = tz.to_datetime(now).time();
        let window = DailyWindow {
            start: local.wrapping_add(SignedDuration::from_mins(30)),
            end: local.wrapping_add(SignedDuration::from_mins(90)),
        };
        let temporary = |from: SignedDuration, to: SignedDuration| Schedule::Temporary {
            start: now + from,
            end: now + to,
        };
        issue_pin_on(&s, plan.door, "1357", temporary(-hours(1), hours(1)));
        issue_pin_on(&s, plan.door, "2468", temporary(hours(1), hours(5)));
        let recurring = Schedule::Recurring {
            days: Weekdays::ALL,
            window,
            start: None,
            end: None,
        };
        issue_pin_on(&s, plan.door, "3579", recurring);
        s.fleet.control(lock, Control::SyncNow).unwrap();
        wait_s(1.0).await;
        assert_eq!(s.fleet.snapshot(lock).await.unwrap().cached_codes, 3);
        s.fleet
            .control(lock, Control::GoOffline { for_s: 86_400.0 })
            .unwrap();
        wait_s(1.0).await;

        let expect = |pins: [(&'static str, DeviceOutcome); 3]| {
            let fleet = &s.fleet;
            async move {
                for (p, want) in pins {
                    let got = fleet.present(lock, pin(p)).await.unwrap();
                    assert_eq!(got.outcome, want, "{p}");
                    assert!(got.decided_locally, "{p}");
                }
            }
        };
        let denied = DeviceOutcome::Denied;
        expect([
            ("1357", DeviceOutcome::Unlocked),
            ("2468", denied(DenyReason::NotYetValid)),
            ("3579", denied(DenyReason::OutsideSchedule)),
        ])
        .await;
        wait_s(3_600.0).await; // now + 1 h: inside the window
        expect([
            ("1357", denied(DenyReason::Expired)),
            ("2468", DeviceOutcome::Unlocked),
            ("3579", DeviceOutcome::Unlocked),
        ])
        .await;
        wait_s(3_600.0).await; // now + 2 h: the window closed
        expect([
            ("1357", denied(DenyReason::Expired)),
            ("2468", DeviceOutcome::Unlocked),
            ("3579", denied(DenyReason::OutsideSchedule)),
        ])
        .await;
    });
}

#[test]
fn a_door_phone_grants_a_valid_qr_denies_a_replay_and_calls_the_lift() {
    run_virtual(|| async {
        let s = inproc_fleet(
            &FleetSpec::new(15)
                .entrances(1)
                .params(DeviceParams::quiet()),
        );
        let plan = s.fleet.provisioned.doors[0].clone();
        let phone = plan.door_phone.unwrap();
        let (_, token) = issue_one_time_qr(&s, plan.door);
        let qr = WireCredential::Qr(token);
        let got = s.fleet.present(phone, qr.clone()).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
        assert_eq!(s.fleet.snapshot(phone).await.unwrap().state, "relay_open");
        let got = s.fleet.present(phone, qr).await.unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::Replayed));
        let forged = WireCredential::Qr("v1.AAAA.BBBB".into());
        let got = s.fleet.present(phone, forged).await.unwrap();
        assert_eq!(
            got.outcome,
            DeviceOutcome::Denied(DenyReason::UnknownCredential)
        );

        issue_card(&s, plan.door, 90_210);
        let floor = s.fleet.provisioned.floors[&plan.site][3];
        let got = s
            .fleet
            .present_with(
                phone,
                Present {
                    credential: WireCredential::Card("90210".into()),
                    floor: Some(floor),
                    human_timing: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Unlocked);
        wait_s(30.0).await;
        let p = s.fleet.snapshot(phone).await.unwrap();
        assert_eq!((p.lift_calls, p.state), (1, "idle"));
        assert_eq!(p.emitted.get("unlocked"), 2);
        assert_eq!(p.emitted.get("locked"), 1, "the relay pulses were merged");
        assert_eq!(p.emitted.get("access_denied"), 2);
        let sensor = s.fleet.snapshot(plan.sensor.unwrap()).await.unwrap();
        assert_eq!(sensor.emitted.get("door_opened"), 1);
        assert_eq!(sensor.emitted.get("door_closed"), 1);
    });
}

#[test]
fn a_qr_at_a_lock_is_a_typed_error() {
    run_virtual(|| async {
        let s = inproc_fleet(
            &FleetSpec::new(16)
                .wifi_doors(1)
                .params(DeviceParams::quiet()),
        );
        let plan = s.fleet.provisioned.doors[0].clone();
        let err = s
            .fleet
            .present(plan.lock.unwrap(), WireCredential::Qr("x".into()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not take QR"), "{err}");
        let err = s
            .fleet
            .present(reference_server::domain::DeviceId(999), pin("1234"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not in this fleet"), "{err}");
    });
}

#[test]
fn thirty_days_of_battery_drain_for_a_thousand_locks() {
    let wall = std::time::Instant::now();
    run_virtual(|| async {
        // Default behaviour (jams, offline spells, skew, BLE syncs every
        // 10 min to 2 h); only the door sensors are left out.
        let s = inproc_fleet(&FleetSpec::new(21).ble_doors(1_000).sensors(false));
        wait_s(30.0 * 86_400.0 + 60.0).await;
        let snaps = s.fleet.snapshots().await.unwrap();
        assert_eq!(snaps.len(), 1_000);
        let mut low = 0;
        for l in &snaps {
            let h = &l.battery_history_pct;
            assert_eq!(h.len(), 31, "a reading a day for 30 days");
            let drained = h[0] - h[30];
            // 0.2 %/day at rest; no actuations in this run.
            assert!((5.99..=6.01).contains(&drained), "{drained}");
            let now = l.battery_pct.unwrap();
            let reported = l.emitted.get("battery_low");
            assert_eq!(reported, u64::from(now < 20.0), "once, below 20 %: {now}");
            low += reported;
            assert!(l.syncs_applied == 0, "no codes were issued");
        }
        assert!(low > 0, "some locks started between 20 and 26 %");
        // Every event reached the engine's log exactly once (offline
        // spells included: buffered and flushed).
        let totals = s.transport.log().totals();
        assert_eq!(totals.per_kind.get("battery_low"), low);
        assert_eq!(totals.duplicates + totals.gaps, 0);
    });
    eprintln!(
        "30 days x 1,000 locks: {:.2} s wall",
        wall.elapsed().as_secs_f64()
    );
}

/// A seeded workload on a mixed fleet with every fault on; returns the
/// fleet's trace digest.
fn traced_run(seed: u64) -> String {
    use rand::{Rng, SeedableRng};
    let mut digest = String::new();
    run_virtual(|| async {
        let mut params = DeviceParams::default().with_trace(true);
        params.lock.motor_block_probability = 0.05;
        params.faults.offline_per_day = 2.0;
        params.door.forced_open_per_day = 3.0;
        let spec = FleetSpec::new(seed)
            .wifi_doors(4)
            .ble_doors(4)
            .entrances(2)
            .params(params);
        let s = inproc_fleet(&spec);
        let doors = s.fleet.provisioned.doors.clone();
        let pins = ["4829", "7315", "2846", "9152"];
        for (d, p) in doors
            .iter()
            .filter(|d| d.lock.is_some())
            .zip(pins.iter().cycle())
        {
            issue_pin(&s, d.door, p);
        }
        s.fleet.push_sync();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..200 {
            let d = &doors[rng.random_range(0..doors.len())];
            let device = d.keypad.or(d.lock).or(d.door_phone).unwrap();
            let code = if rng.random_bool(0.7) {
                pins[rng.random_range(0..4)]
            } else {
                "1397"
            };
            let _ = s
                .fleet
                .present(device, WireCredential::Pin(code.into()))
                .await;
            wait_s(rng.random_range(10.0..3_600.0)).await;
        }
        wait_s(600.0).await;
        // Exactly once: what each device emitted is what the engine logged.
        for snap in s.fleet.snapshots().await.unwrap() {
            let logged = s.transport.log().device(snap.id);
            if snap.online {
                assert_eq!(logged.per_kind, snap.emitted, "{:?}", snap.id);
                assert_eq!(
                    (logged.last_seq, logged.duplicates, logged.gaps),
                    (snap.seq, 0, 0)
                );
            }
        }
        digest = s.fleet.trace_digest().await.unwrap();
    });
    digest
}

#[test]
fn the_same_seed_gives_the_same_event_trace_and_another_seed_another() {
    let a = traced_run(42);
    let b = traced_run(42);
    let c = traced_run(43);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn an_ack_of_an_older_batch_is_dropped_and_the_newer_one_sets_every_code() {
    run_virtual(|| async {
        let s = inproc_fleet(&FleetSpec::new(15).wifi_doors(1));
        let plan = s.fleet.provisioned.doors[0].clone();
        let lock = plan.lock.unwrap();
        // Two batches reach the lock before it acks either: the first ack
        // names a version that is no longer in flight.
        let a = issue_pin(&s, plan.door, "4829");
        assert!(s.fleet.push_sync() > 0);
        let b = issue_pin(&s, plan.door, "7315");
        assert!(s.fleet.push_sync() > 0);
        wait_s(5.0).await;
        assert!(s.transport.stale_acks() >= 1, "the first ack is stale");
        for c in [a, b] {
            let state = s
                .engine
                .read()
                .credential(c)
                .unwrap()
                .placement(lock)
                .unwrap()
                .state;
            assert_eq!(state, reference_server::domain::SyncState::Set, "{c:?}");
        }
        for p in ["4829", "7315"] {
            let got = s.fleet.present(lock, pin(p)).await.unwrap();
            assert_eq!(got.outcome, DeviceOutcome::Unlocked, "{p}");
        }
    });
}

/// Sends `action` to `device` as the server's `simulate` command does.
async fn simulate(s: &Setup, device: reference_server::domain::DeviceId, action: SimAction) {
    let cmd = DeviceCommand {
        id: 1,
        command: CommandKind::Simulate,
        simulate: Some(action),
    };
    let inbound = fleetsim::transport::Inbound::Command(cmd);
    let sent = match &s.fleet.device(device).unwrap().addr {
        DeviceAddr::Lock(a) => a.send(inbound).await,
        DeviceAddr::Keypad(a) => a.send(inbound).await,
        DeviceAddr::Sensor(a) => a.send(inbound).await,
        DeviceAddr::Phone(a) => a.send(inbound).await,
    };
    sent.unwrap();
    // What the device does after (a check, a relock) takes simulated time.
    wait_s(0.5).await;
}

/// The sandbox's `simulate` command: each device kind acts the action out
/// as it would live it, and what the engine logs is what it emitted. A
/// code entry goes through the keypad's own check; a jam jams the lock and
/// a manual lock frees it; the sensor sees the door; a battery level below
/// the threshold reports `battery_low`; a disconnect takes the device off
/// until it reconnects by itself; an action the kind does not fit does
/// nothing.
#[test]
fn devices_act_out_the_sandbox_actions_sent_to_them() {
    run_virtual(|| async {
        let s = inproc_fleet(
            &FleetSpec::new(13)
                .wifi_doors(1)
                .params(DeviceParams::quiet()),
        );
        let plan = s.fleet.provisioned.doors[0].clone();
        let (lock, keypad, sensor) = (
            plan.lock.unwrap(),
            plan.keypad.unwrap(),
            plan.sensor.unwrap(),
        );
        issue_pin(&s, plan.door, "4829");
        s.fleet.push_sync();
        wait_s(1.0).await;

        simulate(&s, lock, SimAction::Jam).await;
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert_eq!((l.state, l.emitted.get("motor_blocked")), ("jammed", 1));
        simulate(&s, lock, SimAction::Lock).await;
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert_eq!((l.state, l.emitted.get("locked")), ("locked", 1));

        // A wrong code: the keypad asks the engine and is denied.
        simulate(
            &s,
            keypad,
            SimAction::KeypadCodeEntry {
                code: "1357".into(),
            },
        )
        .await;
        let k = s.fleet.snapshot(keypad).await.unwrap();
        assert_eq!(
            (k.checks, k.denied, k.emitted.get("access_denied")),
            (1, 1, 1)
        );
        // The right one: granted, the lock opens.
        simulate(
            &s,
            keypad,
            SimAction::KeypadCodeEntry {
                code: "4829".into(),
            },
        )
        .await;
        let k = s.fleet.snapshot(keypad).await.unwrap();
        assert_eq!((k.checks, k.granted), (2, 1));
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert_eq!((l.state, l.emitted.get("unlocked")), ("unlocked", 1));

        // The sensor sees a door left open, then closed.
        let before = s.fleet.snapshot(sensor).await.unwrap().emitted;
        simulate(&s, sensor, SimAction::DoorLeftOpen).await;
        let sn = s.fleet.snapshot(sensor).await.unwrap();
        assert_eq!(sn.state, "open");
        assert_eq!(sn.emitted.get("door_ajar"), before.get("door_ajar") + 1);
        simulate(&s, sensor, SimAction::DoorClose).await;
        assert_eq!(s.fleet.snapshot(sensor).await.unwrap().state, "closed");

        // A battery at 10%: below the 20% threshold.
        let before = s.fleet.snapshot(lock).await.unwrap();
        simulate(&s, lock, SimAction::Battery { level_pct: 10 }).await;
        let l = s.fleet.snapshot(lock).await.unwrap();
        assert!((l.battery_pct.unwrap() - 10.0).abs() < 0.5, "{l:?}");
        assert_eq!(
            l.emitted.get("battery_low"),
            before.emitted.get("battery_low") + 1
        );

        // Not for a keypad: nothing happens.
        let before = s.fleet.snapshot(keypad).await.unwrap();
        simulate(&s, keypad, SimAction::Jam).await;
        simulate(&s, keypad, SimAction::DoorOpen).await;
        assert_eq!(
            s.fleet.snapshot(keypad).await.unwrap().emitted,
            before.emitted
        );

        // A disconnect: off, then back by itself.
        simulate(&s, keypad, SimAction::Disconnect).await;
        assert!(!s.fleet.snapshot(keypad).await.unwrap().online);
        wait_s(fleetsim::devices::SIMULATED_DISCONNECT_S + 1.0).await;
        assert!(s.fleet.snapshot(keypad).await.unwrap().online);

        // The engine logged exactly what each device emitted.
        for d in [lock, keypad, sensor] {
            let snap = s.fleet.snapshot(d).await.unwrap();
            let logged = s.transport.log().device(d);
            assert_eq!(logged.per_kind, snap.emitted, "{d}");
            assert_eq!((logged.duplicates, logged.gaps), (0, 0), "{d}");
        }
    });
}

/// A Wi-Fi lock reflashed with an empty cache, in process: the server
/// shows its three codes set (acked before the reboot), so a delta would
/// carry nothing; the lock asks for a full resync and gets all three
/// again. A reconnect later asks for the delta only: a code issued while
/// it was offline arrives, the three it holds are not pushed again.
#[test]
fn a_lock_that_lost_its_cache_asks_in_process_for_every_code_and_a_reconnect_for_the_delta() {
    use fleetsim::devices::fleet::{Fleet, Placement};
    use fleetsim::transport::{InProcTransport, Transport};

    run_virtual(|| async {
        let r = reflashed_lock(21);
        let (engine, clock, lock) = (r.engine.clone(), r.clock, r.lock);
        let transport = InProcTransport::new(engine.clone(), clock);
        let fleet = Fleet::start(
            &r.spec,
            r.provisioned,
            Transport::InProc(transport),
            clock,
            &Placement::Current,
        );
        wait_s(1.0).await;
        let s = fleet.snapshot(lock).await.unwrap();
        assert_eq!(s.cached_codes, 3, "every code pushed again");
        assert_eq!(s.emitted.get("code_set"), 3);
        assert!(engine
            .read()
            .pending_sync(lock)
            .is_none_or(|b| b.is_empty()));

        fleet
            .control(lock, Control::GoOffline { for_s: 60.0 })
            .unwrap();
        wait_s(1.0).await;
        issue_pin_in(&mut engine.write(), r.org, r.door, "1357", clock.now());
        wait_s(120.0).await;
        let s = fleet.snapshot(lock).await.unwrap();
        assert!(s.online);
        assert_eq!(s.cached_codes, 4);
        assert_eq!(
            s.emitted.get("code_set"),
            4,
            "only the new code came after the reconnect"
        );
    });
}
