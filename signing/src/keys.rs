//! minisign public keys: [`KeyId`] and [`PublicKey`], read from and written
//! to minisign's `.pub` format, plus the line and base64 helpers the key and
//! signature parsers share.
//!
//! Public key file: `untrusted comment: minisign public key <ID>` then
//! base64(`"Ed"` ‖ keynum\[8\] ‖ pk\[32\]).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;

use crate::error::SigningError;
use crate::secret_key::SECRET_KEY_BYTES;

/// Signature algorithm tag of keys and of legacy signatures.
pub(crate) const SIG_ALG: [u8; 2] = *b"Ed";
/// Decoded size of a public key: alg, keynum, pk.
const PUBLIC_KEY_BYTES: usize = 2 + 8 + 32;

/// The 8-byte key number that ties a signature to its key.
///
/// `Display` prints it as minisign does: the bytes read as a little-endian
/// u64, as 16 upper-case hex digits (`"%016llX"`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A trusted minisign public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key number signatures refer to.
    key_id: KeyId,
    /// The ed25519 public key.
    key: VerifyingKey,
}

impl PublicKey {
    /// Reads a whole minisign `.pub` file, or the bare base64 line (`RWQ…`).
    pub fn parse(text: &str) -> Result<PublicKey, SigningError> {
        const WHAT: &str = "public key";
        let bytes = decode_key_text(text, WHAT, PUBLIC_KEY_BYTES)?;
        if bytes[..2] != SIG_ALG {
            return Err(malformed(
                WHAT,
                "unsupported signature algorithm (expected \"Ed\")",
            ));
        }
        let key_id = KeyId(array(&bytes[2..10]));
        let key = VerifyingKey::from_bytes(&array(&bytes[10..42]))
            .map_err(|_| malformed(WHAT, "not a valid ed25519 public key"))?;
        if key.is_weak() {
            // A small-order key would "verify" forged signatures; libsodium refuses it too.
            return Err(malformed(WHAT, "weak (small-order) ed25519 public key"));
        }
        Ok(PublicKey { key_id, key })
    }

    /// The bare base64 form, as `minisign -P` takes it (`"RWQ…"`).
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_BYTES);
        bytes.extend_from_slice(&SIG_ALG);
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(self.key.as_bytes());
        STANDARD.encode(bytes)
    }

    /// The `.pub` file minisign writes:
    /// `"untrusted comment: minisign public key <ID>\n<base64>\n"`.
    pub fn to_file_string(&self) -> String {
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id,
            self.to_base64()
        )
    }

    /// The key number signatures by this key carry.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Builds a key from its id and ed25519 key (for [`SecretKey`](crate::SecretKey)).
    pub(crate) fn from_parts(key_id: KeyId, key: VerifyingKey) -> PublicKey {
        PublicKey { key_id, key }
    }

    /// The ed25519 key, for signature checks.
    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

/// Takes the base64 line of a key file (after an optional `untrusted
/// comment:` line) and decodes it, checking its length.
pub(crate) fn decode_key_text(
    text: &str,
    what: &'static str,
    len: usize,
) -> Result<Vec<u8>, SigningError> {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let mut line = lines.next().ok_or_else(|| malformed(what, "empty"))?;
    if line.starts_with("untrusted comment:") {
        line = lines
            .next()
            .ok_or_else(|| malformed(what, "no base64 line after the comment"))?;
    }
    if lines.next().is_some() {
        return Err(malformed(what, "unexpected lines after the key"));
    }
    let bytes = decode_base64(line, what)?;
    if bytes.len() != len {
        let hint = match bytes.len() {
            PUBLIC_KEY_BYTES => " (this is a public key)",
            SECRET_KEY_BYTES => " (this is a secret key)",
            _ => "",
        };
        return Err(malformed(
            what,
            &format!("{} bytes, expected {len}{hint}", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Decodes one line of standard, padded base64.
pub(crate) fn decode_base64(line: &str, what: &'static str) -> Result<Vec<u8>, SigningError> {
    STANDARD
        .decode(line)
        .map_err(|e| malformed(what, &format!("bad base64: {e}")))
}

/// Shorthand for [`SigningError::Malformed`].
pub(crate) fn malformed(what: &'static str, reason: &str) -> SigningError {
    SigningError::Malformed {
        what,
        reason: reason.to_owned(),
    }
}

/// Copies a slice of known length into an array.
///
/// Invariant: callers pass fixed ranges of buffers whose total length was
/// checked first, so the lengths always match (`copy_from_slice` would panic
/// only on a bug in the offsets of this crate, which every test exercises).
pub(crate) fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_key::SecretKey;

    #[test]
    fn key_id_displays_as_little_endian_hex() {
        let id = KeyId([0x91, 0xb5, 0xbf, 0xef, 0x20, 0x9a, 0xec, 0x20]);
        assert_eq!(id.to_string(), "20EC9A20EFBFB591");
        assert_eq!(format!("{id:?}"), "KeyId(20EC9A20EFBFB591)");
    }

    #[test]
    fn generated_public_key_round_trips_through_file_and_base64() {
        let secret = SecretKey::generate().unwrap();
        let public = secret.public_key();
        let file = public.to_file_string();
        assert!(file.starts_with(&format!(
            "untrusted comment: minisign public key {}\n",
            public.key_id()
        )));
        assert!(file.ends_with('\n'));
        assert_eq!(PublicKey::parse(&file).unwrap(), public);
        assert_eq!(PublicKey::parse(&public.to_base64()).unwrap(), public);
        assert!(public.to_base64().starts_with("RW"));
    }

    #[test]
    fn public_key_parse_rejects_garbage() {
        for text in [
            "",
            "untrusted comment: x\n",
            "not base64!",
            "RWQ=",
            "a\nb\nc",
        ] {
            let err = PublicKey::parse(text).unwrap_err();
            assert!(
                matches!(
                    err,
                    SigningError::Malformed {
                        what: "public key",
                        ..
                    }
                ),
                "{text:?}"
            );
        }
        let public = SecretKey::generate().unwrap().public_key();
        let mut bytes = STANDARD.decode(public.to_base64()).unwrap();
        bytes[0] = b'E';
        bytes[1] = b'D';
        let err = PublicKey::parse(&STANDARD.encode(bytes)).unwrap_err();
        assert!(
            matches!(err, SigningError::Malformed { reason, .. } if reason.contains("algorithm"))
        );
    }

    #[test]
    fn weak_public_key_is_refused() {
        let mut bytes = b"Ed12345678".to_vec();
        bytes.extend_from_slice(&[1; 1]); // y = 1: the identity point, of small order
        bytes.resize(PUBLIC_KEY_BYTES, 0);
        let err = PublicKey::parse(&STANDARD.encode(bytes)).unwrap_err();
        assert!(matches!(err, SigningError::Malformed { reason, .. } if reason.contains("weak")));
    }

    #[test]
    fn secret_key_given_as_public_key_says_so() {
        let text = SecretKey::generate().unwrap().to_file_string();
        let err = PublicKey::parse(&text).unwrap_err();
        assert!(
            matches!(err, SigningError::Malformed { reason, .. } if reason.contains("secret key"))
        );
    }

    #[test]
    fn parse_accepts_crlf_and_surrounding_blank_lines() {
        let public = SecretKey::generate().unwrap().public_key();
        let text = format!("\r\n{}", public.to_file_string().replace('\n', "\r\n"));
        assert_eq!(PublicKey::parse(&text).unwrap(), public);
    }
}
