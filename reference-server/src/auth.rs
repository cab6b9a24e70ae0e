//! Secrets for users (bearer tokens) and devices (MQTT password, HTTP
//! validate bearer): random, shown once, stored as BLAKE3 hashes, compared
//! in constant time (`blake3::Hash`'s equality is constant-time).
//!
//! A user token reads `u{user}.{secret}`: the user part picks the stored
//! hashes to compare against, so no lookup is keyed by the secret itself.

use base64::Engine as _;
use rand::RngCore;

use crate::domain::UserId;

/// Random bytes in a secret (256 bits).
const SECRET_BYTES: usize = 32;
/// Longest bearer token accepted (longer ones are rejected unhashed).
pub const MAX_TOKEN_LEN: usize = 128;

/// A fresh random secret, URL-safe base64.
pub fn random_secret() -> String {
    let mut b = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// Constant-time check of `secret` against a stored hash.
pub fn secret_matches(secret: &str, stored: &[u8; 32]) -> bool {
    secret.len() <= MAX_TOKEN_LEN && blake3::hash(secret.as_bytes()) == blake3::Hash::from(*stored)
}

/// A new secret and the hash to store.
pub fn new_secret() -> (String, [u8; 32]) {
    let secret = random_secret();
    let hash = hash_secret(&secret);
    (secret, hash)
}

/// The bearer token a user presents.
pub fn user_token(user: UserId, secret: &str) -> String {
    format!("u{}.{secret}", user.0)
}

/// Splits a user token into its user and secret part.
pub fn parse_user_token(token: &str) -> Option<(UserId, &str)> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let (user, secret) = token.strip_prefix('u')?.split_once('.')?;
    if user.is_empty() || user.len() > 10 || !user.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((UserId(user.parse().ok()?), secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_others() {
        let (secret, hash) = new_secret();
        let tok = user_token(UserId(7), &secret);
        let (u, secret) = parse_user_token(&tok).unwrap();
        assert_eq!(u, UserId(7));
        assert!(secret_matches(secret, &hash));
        assert!(!secret_matches("nope", &hash));
        for bad in ["", "u.x", "x7.abc", "u7abc", "u99999999999.x"] {
            assert!(parse_user_token(bad).is_none(), "{bad}");
        }
    }
}
