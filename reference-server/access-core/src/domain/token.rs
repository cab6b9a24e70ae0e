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

/// base64url (no padding) digit values; 0xff: not in the alphabet.
const DIGIT: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Decodes a token's text (`TOKEN_TEXT_LEN` base64url digits, unpadded,
/// the unused low bits of the last digit zero: what `URL_SAFE_NO_PAD`
/// accepts) into its raw bytes, on the stack. None: not a token.
#[inline]
fn decode_token_text(text: &[u8]) -> Option<[u8; RAW_LEN]> {
    let text: &[u8; TOKEN_TEXT_LEN] = text.try_into().ok()?;
    let mut raw = [0u8; RAW_LEN];
    // Any digit outside the alphabet sets the high bit of `bad`.
    let mut bad = 0u8;
    let mut d = |c: u8| {
        let v = DIGIT[usize::from(c)];
        bad |= v;
        u32::from(v)
    };
    for (quad, out) in text.chunks_exact(4).zip(raw.chunks_exact_mut(3)) {
        let n = (d(quad[0]) << 18) | (d(quad[1]) << 12) | (d(quad[2]) << 6) | d(quad[3]);
        out.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    // 34 bytes: 11 whole groups and one byte in the last two digits.
    let (a, b) = (d(text[44]), d(text[45]));
    if bad & 0x80 != 0 || b & 0x0f != 0 {
        return None;
    }
    raw[33] = ((a << 2) | (b >> 4)) as u8;
    Some(raw)
}

const _: () = assert!(TOKEN_TEXT_LEN == 46 && RAW_LEN == 34);

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
        self.verify_with_hint(text, |_| {})
    }

    /// `verify`, calling `claimed` with the credential id the token claims
    /// once it is decoded and before its MAC is computed, so the caller can
    /// start fetching that credential meanwhile. The id is not trusted: only
    /// an `Ok` says the token is genuine.
    #[inline]
    pub fn verify_with_hint(
        &self,
        text: &str,
        claimed: impl FnOnce(CredentialId),
    ) -> Result<TokenClaims, TokenError> {
        if text.len() != TOKEN_TEXT_LEN {
            return Err(TokenError::Malformed);
        }
        let raw = decode_token_text(text.as_bytes()).ok_or(TokenError::Malformed)?;
        let claims: [u8; CLAIMS_LEN] = raw[..CLAIMS_LEN].try_into().expect("fixed size");
        claimed(CredentialId(u32::from_be_bytes(
            claims[2..6].try_into().expect("4 bytes"),
        )));
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

        // The stack decoder accepts exactly what the base64 crate's
        // URL_SAFE_NO_PAD does, with the same bytes.
        #[test]
        fn decoder_agrees_with_base64(s in "[A-Za-z0-9_=+/-]{46}", raw in proptest::collection::vec(any::<u8>(), 34)) {
            let canonical = URL_SAFE_NO_PAD.encode(&raw);
            for text in [s.as_str(), canonical.as_str()] {
                let want = URL_SAFE_NO_PAD.decode(text).ok().filter(|v| v.len() == RAW_LEN);
                let got = decode_token_text(text.as_bytes()).map(|a| a.to_vec());
                prop_assert_eq!(got, want, "{}", text);
            }
            // A last digit with low bits set is refused by both.
            let mut t = canonical.into_bytes();
            t[45] = b'B';
            let t = String::from_utf8(t).unwrap();
            prop_assert!(URL_SAFE_NO_PAD.decode(&t).is_err());
            prop_assert!(decode_token_text(t.as_bytes()).is_none());
        }

        #[test]
        fn garbage_is_rejected_without_panic(s in "\\PC{0,80}") {
            let key = TokenKey::from_bytes([9; 32]);
            prop_assert!(key.verify(&s).is_err());
        }
    }
}
