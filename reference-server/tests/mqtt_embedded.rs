//! The device protocol end to end through the embedded broker: plain
//! rumqttc clients play locks against the real gateway and service.

mod mqtt_support;

use mqtt_support::scenarios::{self, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_pin_granted_wrong_pin_denied_with_reason() {
    scenarios::valid_pin_granted_wrong_pin_denied_with_reason(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_issued_code_reaches_an_online_lock_and_becomes_set() {
    scenarios::admin_issued_code_reaches_an_online_lock_and_becomes_set(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then() {
    scenarios::offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then(
        Broker::Embedded,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_sync_is_retried_then_marked_timed_out() {
    scenarios::unacked_sync_is_retried_then_marked_timed_out(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_logged_once() {
    scenarios::a_redelivered_event_is_logged_once(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_counted_and_dropped_without_harm_to_others() {
    scenarios::bad_payloads_are_counted_and_dropped_without_harm_to_others(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_open_command_round_trip() {
    scenarios::remote_open_command_round_trip(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_speak_for_another() {
    scenarios::a_device_cannot_speak_for_another(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_view_shows_what_its_events_said() {
    scenarios::the_device_view_shows_what_its_events_said(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_of_buffered_events_is_logged_whole() {
    scenarios::a_flush_of_buffered_events_is_logged_whole(Broker::Embedded).await;
}

/// The gateway records a round of sync bookkeeping at once: the engine
/// says which devices a change touched (`Applied::sync_changed`), and
/// `Service::apply_batch` applies one `SyncSent` per device under one
/// engine write lock as one store job, each command succeeding or failing
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_round_is_one_store_job_and_each_command_answers_alone() {
    use reference_server::domain::{Actor, DeviceId, SyncState};
    use reference_server::engine::Command;
    use reference_server::service::ServiceError;
    use reference_server::EngineError;

    let w = mqtt_support::fixture::world(3).await;
    let svc = &w.service;
    let code = w.issue_pin("4826").await;
    let devices: Vec<DeviceId> = (0..3).map(|i| w.device(i)).collect();
    // A change on one lock only: its device alone is touched.
    let applied = svc
        .apply(
            &Actor::System,
            Command::SyncSent {
                device: devices[0],
                version: svc.sync_version(devices[0]).unwrap(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        applied.sync_changed,
        Vec::<DeviceId>::new(),
        "a send changes no code list"
    );
    let revoked = svc
        .apply(&w.owner, Command::RevokeCredential { credential: code })
        .await
        .unwrap();
    assert_eq!(
        revoked.sync_changed,
        vec![devices[0]],
        "only the lock it was sent to must remove it"
    );

    let code = w.issue_pin("5937").await;
    let jobs_before = svc.metrics().store_batch_size.get_sample_count();
    let mut cmds: Vec<Command> = devices
        .iter()
        .map(|&device| Command::SyncSent {
            device,
            version: svc.sync_version(device).unwrap(),
        })
        .collect();
    cmds.push(Command::SyncSent {
        device: DeviceId(9_999),
        version: 0,
    });
    let results = svc
        .apply_batch(cmds)
        .await
        .expect("the store takes the round");
    assert_eq!(results.len(), 4);
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(
        matches!(
            &results[3],
            Err(ServiceError::Engine(EngineError::NotFound { .. }))
        ),
        "{:?}",
        results[3]
    );
    for i in 0..3 {
        assert_eq!(w.state(code, i), Some(SyncState::Setting), "lock {i}");
    }
    assert_eq!(
        svc.metrics().store_batch_size.get_sample_count() - jobs_before,
        1,
        "the three records are one store job"
    );
}
