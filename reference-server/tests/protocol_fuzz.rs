//! Every payload of the device protocol, fuzzed through the functions that
//! decode it in production: `protocol::decode` (the gateway's one decoder
//! for `status`, `events`, `auth/req`, `sync/ack` and `cmd/ack`, and the
//! simulated devices' for `auth/resp`, `sync` and `cmd`), then the pure
//! steps that follow a decode (a credential turned into what the engine
//! checks, an event into its activity entry, a code's validity judged),
//! and `parse_topic`, which routes every message.
//!
//! Inputs are valid payloads mutated (a node of the JSON tree replaced,
//! removed or added; bytes flipped, cut or spliced) and random JSON with
//! the protocol's own keys and words, so that the cases reach deep fields.
//! Whatever arrives, the answer is a value or an error, never a panic; a
//! value decoded re-encodes to itself; a payload over the limit is refused
//! unread.
//!
//! 10,000 cases per property by default; `PROPTEST_CASES=N` runs N (see
//! README, "Testing").

mod fuzz_support;

use fuzz_support::*;
use proptest::prelude::*;
use reference_server::activity::ActivityEntry;
use reference_server::domain::{DeviceId, SiteId};
use reference_server::protocol::{
    self, decode, parse_topic, AuthRequest, AuthResponse, Channel, CommandAck, DeviceCommand,
    Event, ProtocolError, Status, SyncAckMsg, SyncPush, MAX_PAYLOAD_BYTES,
};

// ---- properties ---------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// `status` (gateway): decoded, then what the server records of it.
    #[test]
    fn status_payloads_decode_or_are_refused(bytes in payload(status())) {
        if let Some(st) = decodes::<Status>(&bytes)? {
            // The gateway turns it into an online or offline sync input.
            let _ = st.online;
            prop_assert!(st.firmware.as_ref().is_none_or(|f| f.len() <= MAX_PAYLOAD_BYTES));
        }
    }

    /// `events` (gateway): decoded, named for metrics, made an activity entry.
    #[test]
    fn event_payloads_decode_or_are_refused(bytes in payload(event()), device in any::<u32>()) {
        if let Some(ev) = decodes::<Event>(&bytes)? {
            prop_assert!(!ev.kind.name().is_empty());
            let entry = ActivityEntry::from_event(DeviceId(device), &ev);
            prop_assert_eq!(entry.at, ev.at);
        }
    }

    /// `auth/req` (gateway, and the HTTP validate body): decoded, and the
    /// credential turned into what the engine checks.
    #[test]
    fn auth_requests_decode_or_are_refused(bytes in payload(auth_request())) {
        if let Some(req) = decodes::<AuthRequest>(&bytes)? {
            if let Ok(p) = req.credential.to_presented() {
                prop_assert_eq!(p.kind(), req.credential.kind());
            }
        }
    }

    /// `sync/ack` (gateway): its results are the engine's input as they are.
    #[test]
    fn sync_acks_decode_or_are_refused(bytes in payload(sync_ack())) {
        decodes::<SyncAckMsg>(&bytes)?;
    }

    /// `cmd/ack` (gateway).
    #[test]
    fn command_acks_decode_or_are_refused(bytes in payload(command_ack())) {
        decodes::<CommandAck>(&bytes)?;
    }

    /// `auth/resp` (devices).
    #[test]
    fn auth_responses_decode_or_are_refused(bytes in payload(auth_response())) {
        decodes::<AuthResponse>(&bytes)?;
    }

    /// `sync` (devices): decoded, and each code's validity judged at the
    /// device's clock, as a Bluetooth lock does offline.
    #[test]
    fn sync_pushes_decode_or_are_refused(bytes in payload(sync_push()), now in device_now()) {
        if let Some(push) = decodes::<SyncPush>(&bytes)? {
            for code in &push.set {
                if let Some(v) = &code.valid {
                    let _ = v.check(now);
                }
            }
            prop_assert_eq!(push.credentials().count(), push.set.len() + push.remove.len());
        }
    }

    /// `cmd` (devices).
    #[test]
    fn commands_decode_or_are_refused(bytes in payload(command())) {
        decodes::<DeviceCommand>(&bytes)?;
    }

    /// Every topic a message arrives on: parsed, and a parsed topic
    /// rebuilt parses to the same device and channel.
    #[test]
    fn topics_parse_or_are_refused(
        site in any::<u32>(),
        device in any::<u32>(),
        chan in prop::sample::select(Channel::ALL.to_vec()),
        edits in prop::collection::vec(byte_edit(), 0..3),
        random in "\\PC{0,60}",
        use_random in any::<bool>(),
    ) {
        let topic = if use_random {
            random
        } else {
            let mut b = protocol::topic("fleet", SiteId(site), DeviceId(device), chan).into_bytes();
            for e in &edits {
                apply_bytes(&mut b, e);
            }
            String::from_utf8_lossy(&b).into_owned()
        };
        if let Ok((s, d, c)) = parse_topic("fleet", &topic) {
            let again = protocol::topic("fleet", s, d, c);
            prop_assert_eq!(parse_topic("fleet", &again), Ok((s, d, c)));
        }
    }

    /// A payload over the limit is refused before it is parsed, whatever
    /// it holds.
    #[test]
    fn oversized_payloads_are_refused_unread(extra in 1usize..4096, fill in any::<u8>()) {
        let bytes = vec![fill; MAX_PAYLOAD_BYTES + extra];
        prop_assert_eq!(
            decode::<Status>(&bytes),
            Err(ProtocolError::TooLarge(MAX_PAYLOAD_BYTES + extra))
        );
    }
}
