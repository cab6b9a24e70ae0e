//! Signed QR and BLE tokens.
//!
//! A token is `base64url(claims || tag)`: 18 bytes of claims (format version,
//! kind, credential id, credential version, expiry) and a 16-byte keyed
//! BLAKE3 MAC over them. Without the site key nobody can make a token or
//! change a claim; a re-issued credential bumps its version so old tokens stop
//! working. The claims are not secret (the MAC protects integrity, not
//! confidentiality): they hold ids and times, never a code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jiff::Timestamp;

use super::CredentialId;

const FORMAT: u8 = 1;
const CLAIMS_LEN: usize = 18;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = CLAIMS_LEN + TAG_LEN;
/// Length of a token's text: base64url of 34 bytes, unpadded.
pub const TOKEN_TEXT_LEN: usize = (RAW_LEN * 4).div_ceil(3);

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Qr = 1,
    Ble = 2,
}

/// The signed content of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    pub kind: TokenKind,
    pub credential: CredentialId,
    /// Bumped when the credential is re-issued, so older tokens stop working.
    pub version: u32,
    /// The credential's end, if it has one (seconds since the Unix epoch).
    pub expires: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token (wrong length or alphabet)")]
    Malformed,
    #[error("token signature does not match")]
    BadSignature,
    #[error("unknown token format")]
    UnknownFormat,
}

/// The MAC key. 32 random bytes, kept by the server in its data directory.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(redacted)")
    }
}

impl TokenKey {
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn tag(&self, claims: &[u8; CLAIMS_LEN]) -> [u8; TAG_LEN] {
        let full = blake3::keyed_hash(&self.0, claims);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full.as_bytes()[..TAG_LEN]);
        tag
    }

    pub fn sign(&self, c: &TokenClaims) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = FORMAT;
        raw[1] = c.kind as u8;
        raw[2..6].copy_from_slice(&c.credential.0.to_be_bytes());
        raw[6..10].copy_from_slice(&c.version.to_be_bytes());
        let exp = c.expires.map_or(0, |t| t.as_second());
        raw[10..18].copy_from_slice(&exp.to_be_bytes());
        let claims: [u8; CLAIMS_LEN] = raw[..CLAIMS_LEN].try_into().expect("fixed size");
        raw[CLAIMS_LEN..].copy_from_slice(&self.tag(&claims));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks the MAC (in constant time) and decodes the claims.
    pub fn verify(&self, text: &str) -> Result<TokenClaims, TokenError> {
        if text.len() != TOKEN_TEXT_LEN {
            return Err(TokenError::Malformed);
        }
        let mut raw = [0u8; RAW_LEN + 2];
        let n = URL_SAFE_NO_PAD
            .decode_slice(text.as_bytes(), &mut raw)
            .map_err(|_| TokenError::Malformed)?;
        if n != RAW_LEN {
            return Err(TokenError::Malformed);
        }
        let claims: [u8; CLAIMS_LEN] = raw[..CLAIMS_LEN].try_into().expect("fixed size");
        let want = self.tag(&claims);
        // Constant-time compare: no early exit on the first differing byte.
        let diff = want
            .iter()
            .zip(&raw[CLAIMS_LEN..RAW_LEN])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(TokenError::BadSignature);
        }
        if claims[0] != FORMAT {
            return Err(TokenError::UnknownFormat);
        }
        let kind = match claims[1] {
            1 => TokenKind::Qr,
            2 => TokenKind::Ble,
            _ => return Err(TokenError::UnknownFormat),
        };
        let credential = CredentialId(u32::from_be_bytes(
            claims[2..6].try_into().expect("4 bytes"),
        ));
        let version = u32::from_be_bytes(claims[6..10].try_into().expect("4 bytes"));
        let exp = i64::from_be_bytes(claims[10..18].try_into().expect("8 bytes"));
        let expires = if exp == 0 {
            None
        } else {
            Some(Timestamp::from_second(exp).map_err(|_| TokenError::UnknownFormat)?)
        };
        Ok(TokenClaims {
            kind,
            credential,
            version,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            kind: TokenKind::Qr,
            credential: CredentialId(42),
            version: 3,
            expires: Some(Timestamp::from_second(1_800_000_000).unwrap()),
        }
    }

    #[test]
    fn round_trip() {
        let key = TokenKey::from_bytes([7; 32]);
        let t = key.sign(&claims());
        assert_eq!(t.len(), TOKEN_TEXT_LEN);
        assert_eq!(key.verify(&t), Ok(claims()));
    }

    #[test]
    fn another_key_cannot_sign() {
        let t = TokenKey::from_bytes([1; 32]).sign(&claims());
        assert_eq!(
            TokenKey::from_bytes([2; 32]).verify(&t),
            Err(TokenError::BadSignature)
        );
    }

    proptest! {
        // Flipping any bit of any byte is caught.
        #[test]
        fn any_alteration_is_caught(byte in 0usize..RAW_LEN, bit in 0u8..8) {
            let key = TokenKey::from_bytes([9; 32]);
            let t = key.sign(&claims());
            let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
            raw[byte] ^= 1 << bit;
            let forged = URL_SAFE_NO_PAD.encode(raw);
            prop_assert!(key.verify(&forged).is_err());
        }

        #[test]
        fn garbage_is_rejected_without_panic(s in "\\PC{0,80}") {
            let key = TokenKey::from_bytes([9; 32]);
            prop_assert!(key.verify(&s).is_err());
        }
    }
}
