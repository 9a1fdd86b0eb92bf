//! Test TLS material: a throw-away CA and a server certificate it signed for
//! `localhost` and `127.0.0.1`, so tests run the console over real HTTPS.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files of a test CA and of a server certificate signed by it.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate: what clients trust (`[tls] ca_certs`, `--ca-cert`).
    pub ca_pem: PathBuf,
    /// The server certificate for `localhost` and `127.0.0.1` (`--tls-cert`).
    pub cert_pem: PathBuf,
    /// The server certificate's private key (`--tls-key`).
    pub key_pem: PathBuf,
}

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir` (created if needed).
pub fn make_test_ca(dir: &Path) -> TestCa {
    fs::create_dir_all(dir).expect("TLS folder");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.distinguished_name = name("bankswap test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
    server_params.distinguished_name = name("localhost");
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &ca_cert, &ca_key)
        .expect("server certificate");

    let ca = TestCa {
        ca_pem: dir.join("ca.pem"),
        cert_pem: dir.join("server.pem"),
        key_pem: dir.join("server.key"),
    };
    fs::write(&ca.ca_pem, ca_cert.pem()).expect("write ca.pem");
    fs::write(&ca.cert_pem, server_cert.pem()).expect("write server.pem");
    fs::write(&ca.key_pem, server_key.serialize_pem()).expect("write server.key");
    ca
}

/// A distinguished name with just a common name.
fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
