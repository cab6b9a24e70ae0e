//! Webhook signatures in the Standard Webhooks scheme (the one Svix
//! uses): the receiver gets `webhook-id`, `webhook-timestamp` (Unix
//! seconds) and `webhook-signature: v1,<base64>`, where the signature is
//! HMAC-SHA256 over `"{id}.{timestamp}.{body}"` keyed with the endpoint's
//! secret (`whsec_` followed by the key in base64). The test vector below
//! is the scheme's published one, so a receiver built on any Standard
//! Webhooks library accepts these signatures; docs/reference-server.md
//! repeats it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

/// The prefix of a secret as shown to the endpoint's owner.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key bytes of a generated secret.
pub const SECRET_KEY_BYTES: usize = 24;

/// A new endpoint secret, `whsec_<base64 of 24 random bytes>`.
pub fn new_secret() -> String {
    let mut key = [0u8; SECRET_KEY_BYTES];
    rand::rng().fill(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key a secret stands for (None: not `whsec_<base64>`).
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix(SECRET_PREFIX)?;
    STANDARD.decode(b64).ok().filter(|k| !k.is_empty())
}

/// The `webhook-signature` header's value for one delivery.
pub fn signature(key: &[u8], id: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Does `header` (space-separated `v1,<base64>` entries) hold a valid
/// signature of this delivery? Constant-time comparison of each entry.
pub fn verify(key: &[u8], id: &str, timestamp_s: i64, body: &[u8], header: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp_s}.").as_bytes());
    mac.update(body);
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b| STANDARD.decode(b).ok())
        .any(|sig| mac.clone().verify_slice(&sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks test vector (also in docs/reference-server.md).
    #[test]
    fn signs_the_published_test_vector() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            body,
            &format!("v1,bm90IGl0 {sig}")
        ));
        // Any change to id, time or body breaks it.
        assert!(!verify(&key, "msg_x", 1_614_265_330, body, &sig));
        assert!(!verify(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_331,
            body,
            &sig
        ));
        assert!(!verify(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232315}"#,
            &sig
        ));
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = new_secret();
        assert_eq!(secret_key(&s).unwrap().len(), SECRET_KEY_BYTES);
        assert_ne!(new_secret(), s);
        assert_eq!(secret_key("whsec_"), None);
        assert_eq!(secret_key("nope"), None);
        assert_eq!(secret_key("whsec_***"), None);
    }
}
