//! The device protocol end to end through a real Mosquitto (started per
//! test on a free port, with the fleet ACL of docs/mosquitto/acl and a
//! password file of the issued device secrets). Needs `mosquitto` and
//! `mosquitto_passwd` on PATH (apt-get install mosquitto mosquitto-clients).

mod mqtt_support;

use mqtt_support::scenarios::{self, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_pin_granted_wrong_pin_denied_with_reason() {
    scenarios::valid_pin_granted_wrong_pin_denied_with_reason(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_issued_code_reaches_an_online_lock_and_becomes_set() {
    scenarios::admin_issued_code_reaches_an_online_lock_and_becomes_set(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then() {
    scenarios::offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then(
        Broker::Mosquitto,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_sync_is_retried_then_marked_timed_out() {
    scenarios::unacked_sync_is_retried_then_marked_timed_out(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_logged_once() {
    scenarios::a_redelivered_event_is_logged_once(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebooted_lock_asks_for_a_full_resync() {
    scenarios::a_rebooted_lock_asks_for_a_full_resync(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_boot_restarts_seq_without_losing_events() {
    scenarios::a_new_boot_restarts_seq_without_losing_events(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_counted_and_dropped_without_harm_to_others() {
    scenarios::bad_payloads_are_counted_and_dropped_without_harm_to_others(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_open_command_round_trip() {
    scenarios::remote_open_command_round_trip(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_speak_for_another() {
    scenarios::a_device_cannot_speak_for_another(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_of_buffered_events_is_logged_whole() {
    scenarios::a_flush_of_buffered_events_is_logged_whole(Broker::Mosquitto).await;
}
