//! The shared setup of the release tests: a [`Publisher`] that signs
//! manifests and an [`Agent`] that checks them with `verify_release`.

use std::time::SystemTime;

use semver::Version;
use signing::{
    Artifact, ArtifactFormat, Entrypoint, Expectations, KeyId, Manifest, PublicKey, ReleaseError,
    ReleaseKind, SecretKey, VerifiedRelease, parse_rfc3339, verify_release,
};

/// Parses an RFC 3339 test time.
pub(crate) fn time(text: &str) -> SystemTime {
    parse_rfc3339(text).unwrap()
}

/// Parses a test version.
pub(crate) fn version(text: &str) -> Version {
    Version::parse(text).unwrap()
}

/// A publisher's key and a good manifest: product acme-connector, channel
/// stable, sequence 10, version 1.2.0, expiring 2026-12-22T10:00:00Z.
pub(crate) struct Publisher {
    pub(crate) key: SecretKey,
    pub(crate) manifest: Manifest,
}

impl Publisher {
    /// A new key and the good manifest.
    pub(crate) fn new() -> Publisher {
        let manifest = Manifest {
            schema: 1,
            kind: ReleaseKind::Payload,
            platform: None,
            product: "acme-connector".into(),
            channel: "stable".into(),
            sequence: 10,
            version: version("1.2.0"),
            published_at: time("2026-11-22T10:00:00Z"),
            expires_at: time("2026-12-22T10:00:00Z"),
            artifact: Artifact {
                path: "artifacts/a.tar.zst".into(),
                size: 1234,
                sha256: "ab".repeat(32),
                format: ArtifactFormat::TarZst,
                unpacked_size: Some(4096),
                entries: Some(3),
            },
            entrypoint: Entrypoint {
                command: "bin/connector".into(),
                args: vec!["--serve".into()],
            },
            rollout: None,
            downgrade: false,
            index: None,
        };
        Publisher {
            key: SecretKey::generate().unwrap(),
            manifest,
        }
    }

    /// Signs arbitrary bytes: (manifest bytes, signature file bytes).
    pub(crate) fn sign_bytes(&self, bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let signature = self
            .key
            .sign(bytes, "timestamp:1795356000\tfile:release.json");
        (bytes.to_vec(), signature.to_file_string().into_bytes())
    }

    /// Signs the manifest after `edit` changed it.
    pub(crate) fn publish(&self, edit: impl FnOnce(&mut Manifest)) -> (Vec<u8>, Vec<u8>) {
        let mut manifest = self.manifest.clone();
        edit(&mut manifest);
        self.sign_bytes(&manifest.to_json())
    }
}

/// What an agent knows: trusts the publisher, runs 1.1.0 on stable, has seen
/// sequence 5, and it is 2026-11-23T00:00:00Z.
pub(crate) struct Agent {
    pub(crate) keys: Vec<PublicKey>,
    pub(crate) revoked: Vec<KeyId>,
    pub(crate) product: Option<String>,
    pub(crate) highest_sequence: u64,
    pub(crate) running: Option<Version>,
    /// Versions marked bad, as a root stores them (the rule is the root's).
    pub(crate) bad: Vec<bank_layout::BadVersion>,
    pub(crate) now: SystemTime,
}

impl Agent {
    /// Trusts the publisher's key (and one unrelated key).
    pub(crate) fn trusting(publisher: &Publisher) -> Agent {
        Agent {
            keys: vec![
                SecretKey::generate().unwrap().public_key(),
                publisher.key.public_key(),
            ],
            revoked: Vec::new(),
            product: Some("acme-connector".into()),
            highest_sequence: 5,
            running: Some(version("1.1.0")),
            bad: Vec::new(),
            now: time("2026-11-23T00:00:00Z"),
        }
    }

    /// Runs `verify_release` on a (manifest, signature) pair.
    pub(crate) fn check(
        &self,
        (manifest, signature): &(Vec<u8>, Vec<u8>),
    ) -> Result<VerifiedRelease, ReleaseError> {
        let marked_bad = |version: &Version, sequence: u64| {
            bank_layout::marked_bad(&self.bad, &version.to_string(), sequence)
                .map(|mark| mark.sequence)
        };
        let expect = Expectations {
            trusted_keys: &self.keys,
            revoked_keys: &self.revoked,
            product: self.product.as_deref(),
            channel: "stable",
            highest_sequence: self.highest_sequence,
            running_version: self.running.as_ref(),
            marked_bad: &marked_bad,
            now: self.now,
        };
        verify_release(manifest, signature, &expect)
    }
}

/// A fresh publisher key and an agent that trusts it.
pub(crate) fn setup() -> (Publisher, Agent) {
    let publisher = Publisher::new();
    let agent = Agent::trusting(&publisher);
    (publisher, agent)
}
