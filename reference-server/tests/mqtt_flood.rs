//! One device floods while another checks PINs, through the embedded
//! broker and through a real Mosquitto (with the fleet ACL): the other
//! device is answered every time, the flood is held to the device's rate
//! and counted, memory stays bounded, and shutdown loses nothing. A test
//! binary of its own, so its memory bound is not shared with many other
//! tests. Asserts behaviour only; the speed figures come from
//! `examples/mqtt_bench.rs --flood-s` (README).

mod mqtt_support;

use mqtt_support::scenarios::{self, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_flooding_leaves_the_others_answered_embedded() {
    scenarios::one_device_flooding_leaves_the_others_answered(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_flooding_leaves_the_others_answered_mosquitto() {
    scenarios::one_device_flooding_leaves_the_others_answered(Broker::Mosquitto).await;
}
