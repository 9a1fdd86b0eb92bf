//! minisign signatures: the four-line `.minisig` file, signing and checking.
//!
//! ```text
//! untrusted comment: <free text, not signed>
//! base64(sig_alg[2] ‖ keynum[8] ‖ sig[64])
//! trusted comment: <text>
//! base64(global_sig[64])
//! ```
//!
//! `sig` signs BLAKE2b-512(data) when sig_alg is `"ED"` (prehashed, what we
//! write) or the data itself for the legacy `"Ed"`. `global_sig` signs
//! sig ‖ trusted comment, so the trusted comment cannot be changed either.

use std::borrow::Cow;
use std::io::{self, Read};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blake2::{Blake2b512, Digest};
use ed25519_dalek::{Signer, SigningKey};

use crate::error::SigningError;
use crate::keys::{KeyId, PublicKey, SIG_ALG, array, decode_base64, malformed};

/// Signature algorithm tag of a prehashed signature.
const SIG_ALG_PREHASHED: [u8; 2] = *b"ED";
/// Decoded size of the signature line: alg, keynum, sig.
const SIGNATURE_LINE_BYTES: usize = 2 + 8 + 64;
/// Prefix of the first line.
const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
/// Prefix of the third line.
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// The untrusted comment of signatures this crate makes.
const DEFAULT_UNTRUSTED_COMMENT: &str = "signature from bankswap secret key";
/// What [`SigningError::Malformed`] says was being read.
const WHAT: &str = "signature";

/// Hashes everything `reader` yields with BLAKE2b-512, in 64 KiB chunks, so
/// a large file can be signed or checked without holding it in memory.
pub fn prehash(mut reader: impl Read) -> io::Result<[u8; 64]> {
    let mut hasher = Blake2b512::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// BLAKE2b-512 of a buffer (what "ED" signatures sign).
pub(crate) fn blake2b_512(data: &[u8]) -> [u8; 64] {
    Blake2b512::digest(data).into()
}

/// A minisign signature, with its trusted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `true` for "ED" (over BLAKE2b-512 of the data), `false` for legacy "Ed".
    prehashed: bool,
    /// The key number of the signing key.
    key_id: KeyId,
    /// The ed25519 signature over the data (or its prehash).
    signature: [u8; 64],
    /// The first line's text; not signed, kept so a file round-trips.
    untrusted_comment: String,
    /// The third line's text; covered by `global_signature`.
    trusted_comment: String,
    /// The ed25519 signature over `signature ‖ trusted_comment`.
    global_signature: [u8; 64],
}

impl Signature {
    /// Signs a prehash and the trusted comment (line breaks in the comment
    /// become spaces, as it must stay one line).
    pub(crate) fn create(
        key_id: KeyId,
        key: &SigningKey,
        prehash: &[u8; 64],
        trusted_comment: &str,
    ) -> Signature {
        let trusted_comment = trusted_comment.replace(['\r', '\n'], " ");
        let signature = key.sign(prehash).to_bytes();
        let global_signature = key
            .sign(&global_message(&signature, &trusted_comment))
            .to_bytes();
        Signature {
            prehashed: true,
            key_id,
            signature,
            untrusted_comment: DEFAULT_UNTRUSTED_COMMENT.to_owned(),
            trusted_comment,
            global_signature,
        }
    }

    /// Reads a `.minisig` file (four lines; `\r\n` line ends are accepted).
    pub fn parse(text: &str) -> Result<Signature, SigningError> {
        let mut lines: Vec<&str> = text.lines().collect();
        while lines.last().is_some_and(|line| line.trim().is_empty()) {
            lines.pop();
        }
        let [first, sig_line, third, global_line] = lines[..] else {
            return Err(malformed(
                WHAT,
                &format!("{} lines, expected 4", lines.len()),
            ));
        };
        let untrusted_comment = first
            .strip_prefix(UNTRUSTED_PREFIX)
            .ok_or_else(|| malformed(WHAT, "line 1 does not start with \"untrusted comment: \""))?;
        let trusted_comment = third
            .strip_prefix(TRUSTED_PREFIX)
            .ok_or_else(|| malformed(WHAT, "line 3 does not start with \"trusted comment: \""))?;
        let sig_bytes = decode_base64(sig_line.trim(), WHAT)?;
        if sig_bytes.len() != SIGNATURE_LINE_BYTES {
            let reason = format!(
                "line 2 is {} bytes, expected {SIGNATURE_LINE_BYTES}",
                sig_bytes.len()
            );
            return Err(malformed(WHAT, &reason));
        }
        let prehashed = match array::<2>(&sig_bytes[..2]) {
            SIG_ALG_PREHASHED => true,
            SIG_ALG => false,
            _ => return Err(malformed(WHAT, "unsupported signature algorithm")),
        };
        let global_bytes = decode_base64(global_line.trim(), WHAT)?;
        if global_bytes.len() != 64 {
            let reason = format!("line 4 is {} bytes, expected 64", global_bytes.len());
            return Err(malformed(WHAT, &reason));
        }
        Ok(Signature {
            prehashed,
            key_id: KeyId(array(&sig_bytes[2..10])),
            signature: array(&sig_bytes[10..]),
            untrusted_comment: untrusted_comment.trim_end_matches('\r').to_owned(),
            trusted_comment: trusted_comment.trim_end_matches('\r').to_owned(),
            global_signature: array(&global_bytes),
        })
    }

    /// The `.minisig` file text, as minisign writes it.
    pub fn to_file_string(&self) -> String {
        let alg = if self.prehashed {
            SIG_ALG_PREHASHED
        } else {
            SIG_ALG
        };
        let mut sig_bytes = Vec::with_capacity(SIGNATURE_LINE_BYTES);
        sig_bytes.extend_from_slice(&alg);
        sig_bytes.extend_from_slice(&self.key_id.0);
        sig_bytes.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            STANDARD.encode(sig_bytes),
            self.trusted_comment,
            STANDARD.encode(self.global_signature),
        )
    }

    /// The key number of the key that made this signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The trusted (signed) comment. Only meaningful once verified.
    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// `true` for a prehashed "ED" signature, `false` for a legacy "Ed" one.
    pub fn is_prehashed(&self) -> bool {
        self.prehashed
    }

    /// Finds the key by id ([`SigningError::UnknownKey`]), checks the
    /// signature over `data` (BLAKE2b-512 of `data` for "ED", `data` itself
    /// for "Ed") and the global signature over signature ‖ trusted comment
    /// ([`SigningError::BadSignature`]). Returns the key that verified.
    pub fn verify<'k>(
        &self,
        trusted: &'k [PublicKey],
        data: &[u8],
    ) -> Result<&'k PublicKey, SigningError> {
        let message: Cow<'_, [u8]> = if self.prehashed {
            Cow::Owned(blake2b_512(data).to_vec())
        } else {
            Cow::Borrowed(data)
        };
        self.check(trusted, &message)
    }

    /// Same as [`verify`](Self::verify) for an "ED" signature when the caller
    /// streamed the data through [`prehash`]. A legacy "Ed" signature gives
    /// [`SigningError::NotPrehashed`].
    pub fn verify_prehashed<'k>(
        &self,
        trusted: &'k [PublicKey],
        prehash: &[u8; 64],
    ) -> Result<&'k PublicKey, SigningError> {
        if !self.prehashed {
            return Err(SigningError::NotPrehashed {
                key_id: self.key_id,
            });
        }
        self.check(trusted, prehash)
    }

    /// Checks both signatures against every trusted key with our key id.
    fn check<'k>(
        &self,
        trusted: &'k [PublicKey],
        message: &[u8],
    ) -> Result<&'k PublicKey, SigningError> {
        let mut candidates = trusted
            .iter()
            .filter(|key| key.key_id() == self.key_id)
            .peekable();
        if candidates.peek().is_none() {
            return Err(SigningError::UnknownKey {
                key_id: self.key_id,
                trusted: trusted.iter().map(PublicKey::key_id).collect(),
            });
        }
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        let global_signature = ed25519_dalek::Signature::from_bytes(&self.global_signature);
        let global = global_message(&self.signature, &self.trusted_comment);
        // `verify_strict` also refuses weak keys and malleable signatures, as
        // libsodium (which minisign uses) does.
        candidates
            .find(|key| {
                let key = key.verifying_key();
                key.verify_strict(message, &signature).is_ok()
                    && key.verify_strict(&global, &global_signature).is_ok()
            })
            .ok_or(SigningError::BadSignature {
                key_id: self.key_id,
            })
    }
}

/// What the global signature covers: signature ‖ trusted comment.
fn global_message(signature: &[u8; 64], trusted_comment: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(64 + trusted_comment.len());
    message.extend_from_slice(signature);
    message.extend_from_slice(trusted_comment.as_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_key::SecretKey;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    #[test]
    fn sign_then_verify_returns_the_signing_key() {
        let secret = key();
        let trusted = [key().public_key(), secret.public_key()];
        let signature = secret.sign(b"hello", "timestamp:1");
        assert!(signature.is_prehashed());
        assert_eq!(signature.key_id(), secret.key_id());
        assert_eq!(signature.trusted_comment(), "timestamp:1");
        let found = signature.verify(&trusted, b"hello").unwrap();
        assert_eq!(found, &trusted[1]);
    }

    #[test]
    fn file_string_round_trips() {
        let signature = key().sign(b"data", "a comment with spaces  ");
        let text = signature.to_file_string();
        assert_eq!(text.lines().count(), 4);
        assert!(text.ends_with('\n'));
        assert_eq!(Signature::parse(&text).unwrap(), signature);
        assert_eq!(
            Signature::parse(&text.replace('\n', "\r\n")).unwrap(),
            signature
        );
    }

    #[test]
    fn streamed_prehash_matches_one_shot_signing() {
        let secret = key();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let prehash = prehash(&data[..]).unwrap();
        assert_eq!(prehash, blake2b_512(&data));
        let streamed = secret.sign_prehashed(&prehash, "c");
        assert_eq!(streamed, secret.sign(&data, "c"));
        let trusted = [secret.public_key()];
        streamed.verify(&trusted, &data).unwrap();
        streamed.verify_prehashed(&trusted, &prehash).unwrap();
    }

    #[test]
    fn changed_data_is_a_bad_signature() {
        let secret = key();
        let signature = secret.sign(b"hello", "c");
        let err = signature
            .verify(&[secret.public_key()], b"hellO")
            .unwrap_err();
        assert!(matches!(err, SigningError::BadSignature { key_id } if key_id == secret.key_id()));
    }

    #[test]
    fn changed_trusted_comment_is_a_bad_signature() {
        let secret = key();
        let text = secret.sign(b"hello", "version 1").to_file_string();
        let forged = Signature::parse(&text.replace("version 1", "version 2")).unwrap();
        let err = forged.verify(&[secret.public_key()], b"hello").unwrap_err();
        assert!(matches!(err, SigningError::BadSignature { .. }));
    }

    #[test]
    fn unknown_key_lists_the_trusted_ids() {
        let other = key().public_key();
        let signature = key().sign(b"hello", "c");
        let err = signature
            .verify(std::slice::from_ref(&other), b"hello")
            .unwrap_err();
        assert!(matches!(&err, SigningError::UnknownKey { key_id, trusted }
            if *key_id == signature.key_id() && trusted == &[other.key_id()]));
    }

    #[test]
    fn same_key_id_with_another_key_is_a_bad_signature() {
        let secret = key();
        let text = key().public_key().to_base64();
        let mut bytes = STANDARD.decode(text).unwrap();
        bytes[2..10].copy_from_slice(&secret.key_id().0);
        let impostor = PublicKey::parse(&STANDARD.encode(bytes)).unwrap();
        let err = secret
            .sign(b"x", "c")
            .verify(&[impostor], b"x")
            .unwrap_err();
        assert!(matches!(err, SigningError::BadSignature { .. }));
    }

    #[test]
    fn line_breaks_in_the_trusted_comment_become_spaces() {
        let secret = key();
        let signature = secret.sign(b"x", "one\ntwo\r\nthree");
        assert_eq!(signature.trusted_comment(), "one two  three");
        let parsed = Signature::parse(&signature.to_file_string()).unwrap();
        parsed.verify(&[secret.public_key()], b"x").unwrap();
    }

    #[test]
    fn legacy_signature_cannot_be_checked_against_a_prehash() {
        let secret = key();
        let text = secret.sign(b"x", "c").to_file_string();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut bytes = STANDARD.decode(&lines[1]).unwrap();
        bytes[..2].copy_from_slice(b"Ed");
        lines[1] = STANDARD.encode(bytes);
        let legacy = Signature::parse(&lines.join("\n")).unwrap();
        assert!(!legacy.is_prehashed());
        let err = legacy
            .verify_prehashed(&[secret.public_key()], &[0; 64])
            .unwrap_err();
        assert!(matches!(err, SigningError::NotPrehashed { .. }));
    }

    #[test]
    fn malformed_files_are_refused() {
        let good = key().sign(b"x", "c").to_file_string();
        let lines: Vec<&str> = good.lines().collect();
        let cases = [
            String::new(),
            lines[..3].join("\n"),
            format!("{}\nextra", good),
            good.replacen("untrusted comment: ", "comment: ", 1),
            good.replacen("trusted comment: c", "comment: c", 1),
            [lines[0], "RUQ=", lines[2], lines[3]].join("\n"),
            [lines[0], lines[1], lines[2], "!!!"].join("\n"),
            [lines[0], lines[1], lines[2], &lines[3][4..]].join("\n"),
            good.replacen(lines[1], &lines[1].replacen("RU", "RX", 1), 1),
        ];
        for text in cases {
            let err = Signature::parse(&text).unwrap_err();
            assert!(
                matches!(err, SigningError::Malformed { what: WHAT, .. }),
                "{text:?}"
            );
        }
    }
}
