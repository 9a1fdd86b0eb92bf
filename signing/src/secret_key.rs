//! The unencrypted minisign [`SecretKey`]: generating, reading and writing
//! it, and signing with it.
//!
//! Secret key file (unencrypted, as `minisign -G -W` writes it): a comment
//! line, then base64 of sig_alg `"Ed"`\[2\] ‖ kdf_alg `[0,0]`\[2\] ‖ chk_alg
//! `"B2"`\[2\] ‖ kdf_salt\[32\] ‖ opslimit\[8\] ‖ memlimit\[8\] ‖ keynum\[8\] ‖
//! sk\[64\] (seed ‖ pk) ‖ chk\[32\], where chk = BLAKE2b-256(sig_alg ‖ keynum ‖ sk).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use ed25519_dalek::SigningKey;

use crate::error::SigningError;
use crate::keys::{KeyId, PublicKey, SIG_ALG, array, decode_key_text, malformed};
use crate::signature::{Signature, blake2b_512};

/// Key derivation tag of a password-encrypted secret key (scrypt).
const KDF_SCRYPT: [u8; 2] = *b"Sc";
/// Key derivation tag of an unencrypted secret key.
const KDF_NONE: [u8; 2] = [0, 0];
/// Checksum algorithm tag (BLAKE2b-256).
const CHK_ALG: [u8; 2] = *b"B2";
/// Decoded size of a secret key: algs, salt, limits, keynum, sk, chk.
pub(crate) const SECRET_KEY_BYTES: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
/// Offset of keynum in a decoded secret key.
const SK_KEYNUM: usize = 2 + 2 + 2 + 32 + 8 + 8;
/// Offset of the 64-byte sk (seed ‖ pk) in a decoded secret key.
const SK_SK: usize = SK_KEYNUM + 8;
/// Offset of the checksum in a decoded secret key.
const SK_CHK: usize = SK_SK + 64;

/// An unencrypted minisign secret key.
///
/// `Debug` shows only the key id.
#[derive(Clone)]
pub struct SecretKey {
    /// The key number written into every signature.
    key_id: KeyId,
    /// The ed25519 signing key (wiped from memory on drop by ed25519-dalek).
    key: SigningKey,
}

impl SecretKey {
    /// Makes a new key pair from the operating system's random source.
    pub fn generate() -> Result<SecretKey, SigningError> {
        let mut seed = [0u8; 32];
        let mut keynum = [0u8; 8];
        getrandom::fill(&mut seed)
            .and_then(|()| getrandom::fill(&mut keynum))
            .map_err(|e| SigningError::Randomness {
                reason: e.to_string(),
            })?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(SecretKey {
            key_id: KeyId(keynum),
            key,
        })
    }

    /// Reads an unencrypted minisign secret key file (as `minisign -G -W`
    /// writes it), or its bare base64 line.
    ///
    /// A password-protected key gives [`SigningError::EncryptedKey`]. The
    /// checksum is verified; an all-zero checksum is accepted because
    /// `minisign -G -W` (0.11) writes one. In every case the public half
    /// stored in the key must match the one derived from the seed.
    pub fn parse(text: &str) -> Result<SecretKey, SigningError> {
        const WHAT: &str = "secret key";
        let mut bytes = decode_key_text(text, WHAT, SECRET_KEY_BYTES)?;
        let result = Self::from_decoded(&bytes);
        bytes.fill(0);
        result
    }

    /// Checks and splits a decoded secret key (see the module doc).
    fn from_decoded(bytes: &[u8]) -> Result<SecretKey, SigningError> {
        const WHAT: &str = "secret key";
        if bytes[0..2] != SIG_ALG {
            return Err(malformed(
                WHAT,
                "unsupported signature algorithm (expected \"Ed\")",
            ));
        }
        match array::<2>(&bytes[2..4]) {
            KDF_NONE => {}
            KDF_SCRYPT => return Err(SigningError::EncryptedKey),
            _ => return Err(malformed(WHAT, "unsupported key derivation function")),
        }
        if bytes[4..6] != CHK_ALG {
            return Err(malformed(
                WHAT,
                "unsupported checksum algorithm (expected \"B2\")",
            ));
        }
        let keynum: [u8; 8] = array(&bytes[SK_KEYNUM..SK_SK]);
        let sk = &bytes[SK_SK..SK_CHK];
        let chk = &bytes[SK_CHK..];
        if chk.iter().any(|&b| b != 0) && chk != checksum(&keynum, sk).as_slice() {
            return Err(malformed(WHAT, "checksum mismatch (corrupted key file)"));
        }
        let mut seed: [u8; 32] = array(&sk[..32]);
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        if key.verifying_key().as_bytes() != &sk[32..] {
            return Err(malformed(
                WHAT,
                "public half does not match the secret seed",
            ));
        }
        Ok(SecretKey {
            key_id: KeyId(keynum),
            key,
        })
    }

    /// The unencrypted minisign format, readable by `minisign -S -s`.
    pub fn to_file_string(&self) -> String {
        let mut sk = [0u8; 64];
        sk[..32].copy_from_slice(self.key.as_bytes());
        sk[32..].copy_from_slice(self.key.verifying_key().as_bytes());
        let mut bytes = Vec::with_capacity(SECRET_KEY_BYTES);
        bytes.extend_from_slice(&SIG_ALG);
        bytes.extend_from_slice(&KDF_NONE);
        bytes.extend_from_slice(&CHK_ALG);
        // kdf_salt, opslimit and memlimit are unused without a password: zero, as minisign.
        bytes.resize(SK_KEYNUM, 0);
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(&sk);
        bytes.extend_from_slice(&checksum(&self.key_id.0, &sk));
        let text = format!(
            "untrusted comment: minisign unencrypted secret key {}\n{}\n",
            self.key_id,
            STANDARD.encode(&bytes)
        );
        sk.fill(0);
        bytes.fill(0);
        text
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_parts(self.key_id, self.key.verifying_key())
    }

    /// The key number written into every signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Signs `data` (prehashed "ED" format: the signature is over
    /// BLAKE2b-512 of the data). Line breaks in `trusted_comment` become
    /// spaces, since the comment is one line of the signature file.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Signature {
        self.sign_prehashed(&blake2b_512(data), trusted_comment)
    }

    /// Signs data the caller already streamed through
    /// [`prehash`](crate::prehash). Same as [`sign`](Self::sign) otherwise.
    pub fn sign_prehashed(&self, prehash: &[u8; 64], trusted_comment: &str) -> Signature {
        Signature::create(self.key_id, &self.key, prehash, trusted_comment)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// BLAKE2b-256(sig_alg ‖ keynum ‖ sk), minisign's secret key checksum.
fn checksum(keynum: &[u8; 8], sk: &[u8]) -> [u8; 32] {
    let mut hasher = Blake2b::<U32>::new();
    hasher.update(SIG_ALG);
    hasher.update(keynum);
    hasher.update(sk);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_key_round_trips() {
        let secret = SecretKey::generate().unwrap();
        let text = secret.to_file_string();
        let again = SecretKey::parse(&text).unwrap();
        assert_eq!(again.key_id(), secret.key_id());
        assert_eq!(again.public_key(), secret.public_key());
        assert_eq!(again.to_file_string(), text);
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_ne!(a.key_id(), b.key_id());
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let secret = SecretKey::generate().unwrap();
        let shown = format!("{secret:?}");
        assert!(shown.contains(&secret.key_id().to_string()));
        assert!(!shown.contains("secret_key"));
    }

    /// Decodes a generated secret key, lets `edit` change the bytes, and
    /// parses the result again.
    fn parse_edited(edit: impl FnOnce(&mut Vec<u8>)) -> Result<SecretKey, SigningError> {
        let text = SecretKey::generate().unwrap().to_file_string();
        let mut bytes = STANDARD.decode(text.lines().nth(1).unwrap()).unwrap();
        edit(&mut bytes);
        SecretKey::parse(&STANDARD.encode(bytes))
    }

    #[test]
    fn encrypted_secret_key_is_refused_with_a_clear_error() {
        let err = parse_edited(|b| b[2..4].copy_from_slice(b"Sc")).unwrap_err();
        assert!(matches!(err, SigningError::EncryptedKey));
    }

    #[test]
    fn corrupted_checksum_is_refused() {
        let err = parse_edited(|b| b[SK_CHK] ^= 1).unwrap_err();
        assert!(
            matches!(err, SigningError::Malformed { reason, .. } if reason.contains("checksum"))
        );
    }

    #[test]
    fn all_zero_checksum_is_accepted_as_minisign_writes_it() {
        parse_edited(|b| b[SK_CHK..].fill(0)).unwrap();
    }

    #[test]
    fn corrupted_secret_seed_is_refused_even_without_checksum() {
        let err = parse_edited(|b| {
            b[SK_SK] ^= 1;
            b[SK_CHK..].fill(0);
        })
        .unwrap_err();
        assert!(
            matches!(err, SigningError::Malformed { reason, .. } if reason.contains("public half"))
        );
    }

    #[test]
    fn unsupported_algorithms_are_refused() {
        let err = parse_edited(|b| b[0..2].copy_from_slice(b"XX")).unwrap_err();
        assert!(matches!(
            err,
            SigningError::Malformed {
                what: "secret key",
                ..
            }
        ));
        let err = parse_edited(|b| b[2..4].copy_from_slice(b"??")).unwrap_err();
        assert!(
            matches!(err, SigningError::Malformed { reason, .. } if reason.contains("derivation"))
        );
        let err = parse_edited(|b| b[4..6].copy_from_slice(b"B3")).unwrap_err();
        assert!(
            matches!(err, SigningError::Malformed { reason, .. } if reason.contains("checksum"))
        );
    }
}
