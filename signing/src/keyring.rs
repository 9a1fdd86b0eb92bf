//! [`KeyRing`]: the keys an agent trusts, once key rotation is taken into
//! account (SPEC §13 "Key rotation", issue 9 item 5).
//!
//! Three sets make the ring:
//! - **configured** keys (`trusted_keys` of the agent config, or `--trust`):
//!   always trusted unless a verified rotation record revoked them;
//! - **endorsed** keys: added by verified rotation records, persisted by the
//!   agent beside its state;
//! - **revoked** keys: refused whatever else says, for good.
//!
//! and one number, the highest rotation `sequence` applied, which defends
//! against replayed records. The ring is a plain value: it changes only
//! through [`verify_rotation`](crate::verify_rotation), which returns the
//! ring a record leads to.

use crate::keys::{KeyId, PublicKey};

/// The keys an agent trusts: configured, endorsed, minus revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    /// The keys of the agent's configuration.
    configured: Vec<PublicKey>,
    /// Keys endorsed by verified rotation records.
    endorsed: Vec<PublicKey>,
    /// Keys revoked by verified rotation records.
    revoked: Vec<PublicKey>,
    /// The highest rotation sequence applied (0: none).
    sequence: u64,
}

impl KeyRing {
    /// A ring of configured keys only, with no rotation applied.
    pub fn new(configured: Vec<PublicKey>) -> KeyRing {
        KeyRing::restore(configured, Vec::new(), Vec::new(), 0)
    }

    /// A ring as persisted by the agent: its configured keys plus what
    /// earlier rotation records endorsed and revoked, up to `sequence`.
    pub fn restore(
        configured: Vec<PublicKey>,
        endorsed: Vec<PublicKey>,
        revoked: Vec<PublicKey>,
        sequence: u64,
    ) -> KeyRing {
        KeyRing {
            configured: dedup(configured),
            endorsed: dedup(endorsed),
            revoked: dedup(revoked),
            sequence,
        }
    }

    /// The keys whose signatures are accepted: configured and endorsed
    /// keys that are not revoked, each once.
    pub fn trusted(&self) -> Vec<PublicKey> {
        let all = self.configured.iter().chain(&self.endorsed).cloned();
        dedup(all.filter(|key| !self.is_revoked(key.key_id())).collect())
    }

    /// The ids of the revoked keys, for
    /// [`Expectations::revoked_keys`](crate::Expectations::revoked_keys).
    pub fn revoked_ids(&self) -> Vec<KeyId> {
        self.revoked.iter().map(PublicKey::key_id).collect()
    }

    /// `true` when a rotation record revoked the key with this id.
    pub fn is_revoked(&self, key_id: KeyId) -> bool {
        self.revoked.iter().any(|key| key.key_id() == key_id)
    }

    /// The configured keys (revoked or not).
    pub fn configured(&self) -> &[PublicKey] {
        &self.configured
    }

    /// The keys rotation records endorsed (revoked or not): what the agent
    /// persists.
    pub fn endorsed(&self) -> &[PublicKey] {
        &self.endorsed
    }

    /// The keys rotation records revoked: what the agent persists.
    pub fn revoked(&self) -> &[PublicKey] {
        &self.revoked
    }

    /// The highest rotation sequence applied (0 when none was).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The ring after a record of `sequence` endorsed and revoked these
    /// keys. Only [`verify_rotation`](crate::verify_rotation) calls it,
    /// after every rule passed.
    pub(crate) fn rotated(
        &self,
        sequence: u64,
        endorse: &[PublicKey],
        revoke: &[PublicKey],
    ) -> KeyRing {
        let mut endorsed = self.endorsed.clone();
        endorsed.extend_from_slice(endorse);
        let mut revoked = self.revoked.clone();
        revoked.extend_from_slice(revoke);
        KeyRing::restore(self.configured.clone(), endorsed, revoked, sequence)
    }
}

/// Keeps the first key of each id (two keys with one id would make every
/// signature by that id ambiguous; the first one wins, as in a config file).
fn dedup(keys: Vec<PublicKey>) -> Vec<PublicKey> {
    let mut out: Vec<PublicKey> = Vec::with_capacity(keys.len());
    for key in keys {
        if !out.iter().any(|k| k.key_id() == key.key_id()) {
            out.push(key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_key::SecretKey;

    fn key() -> PublicKey {
        SecretKey::generate().unwrap().public_key()
    }

    #[test]
    fn trusted_is_configured_and_endorsed_minus_revoked() {
        let (a, b, c) = (key(), key(), key());
        let ring = KeyRing::restore(
            vec![a.clone(), b.clone()],
            vec![c.clone(), a.clone()],
            vec![b.clone()],
            3,
        );
        assert_eq!(ring.trusted(), vec![a.clone(), c.clone()]);
        assert_eq!(ring.revoked_ids(), vec![b.key_id()]);
        assert!(ring.is_revoked(b.key_id()) && !ring.is_revoked(a.key_id()));
        assert_eq!(ring.sequence(), 3);
        assert_eq!(ring.configured(), &[a, b]);
        assert_eq!(ring.endorsed().len(), 2);
    }

    #[test]
    fn a_new_ring_trusts_its_configured_keys() {
        let a = key();
        let ring = KeyRing::new(vec![a.clone(), a.clone()]);
        assert_eq!(ring.trusted(), vec![a]);
        assert_eq!((ring.sequence(), ring.revoked().len()), (0, 0));
    }
}
