//! Publishing to a running console: `publish --console URL` packs and signs
//! on the admin's side and uploads the artifact and the release over
//! loopback HTTPS; the console re-verifies, writes and serves it, and pushes
//! it to held requests. Every refusal (wrong token, untrusted key, replayed
//! sequence, bytes that do not match their name, uploads disabled) names its
//! reason and leaves the data folder as it was.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::https::{Http, Reply};
use crate::support::live::ConsoleProcess;
use crate::support::tls::{TestCa, make_test_ca};
use crate::support::{Run, World, assert_fails_with, bankswap, run, tree};

/// The console's admin token in these tests.
const TOKEN: &str = "test-admin-token-0123456789";

/// A console that accepts uploads signed by the world's `release` key.
struct Uploads {
    /// Keys, payloads and folders.
    w: World,
    /// The console's data folder.
    data: PathBuf,
    /// The test CA (`--ca-cert`).
    ca: TestCa,
    /// The console.
    console: ConsoleProcess,
    /// The file holding [`TOKEN`].
    token_file: PathBuf,
    /// A client for raw requests.
    http: Http,
}

impl Uploads {
    fn new() -> Uploads {
        Uploads::trusting(&[])
    }

    /// A console that also trusts the new key pairs `others`.
    fn trusting(others: &[&str]) -> Uploads {
        let w = World::new();
        let data = w.path("console-data");
        let ca = make_test_ca(&w.path("tls"));
        let token_file = w.path("admin-token");
        fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
        let mut args = vec![
            "--admin-token-file".to_string(),
            token_file.display().to_string(),
        ];
        for key in std::iter::once(&"release").chain(others) {
            if *key != "release" {
                w.keygen(key);
            }
            args.extend(["--trust".to_string(), w.public(key)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let console =
            ConsoleProcess::start_with(&data, &ca, "127.0.0.1:0", &w.path("console.log"), &args);
        let http = Http::new(&ca);
        Uploads {
            w,
            data,
            ca,
            console,
            token_file,
            http,
        }
    }

    /// `publish --key K --console URL --ca-cert CA` plus `args`.
    fn publish(&self, key: &str, args: &[&str]) -> Run {
        let mut cmd = bankswap();
        cmd.args(["publish", "--key", &self.w.secret(key)])
            .args(["--console", &self.console.url])
            .args(["--ca-cert", &self.ca.ca_pem.display().to_string()])
            .args(args)
            .env_remove("BANKSWAP_TOKEN");
        cmd.output().expect("bankswap runs").into()
    }

    /// Publishes a fresh payload `version` with the token file; asserts success.
    fn publish_version(&self, version: &str) -> Run {
        self.publish_signed("release", version)
    }

    /// Publishes a fresh payload `version` signed by key pair `key`; asserts success.
    fn publish_signed(&self, key: &str, version: &str) -> Run {
        let payload = self.w.payload(version, 2, 1000);
        let out = self.publish(
            key,
            &[
                "--payload",
                &payload.display().to_string(),
                "--version",
                version,
                "--entrypoint",
                "bin/app --serve",
                "--token-file",
                &self.token_file.display().to_string(),
            ],
        );
        assert_eq!(out.code, 0, "{out:?}\nconsole: {}", self.console.stderr());
        out
    }

    /// The served manifest, parsed.
    fn served(&self) -> Value {
        let reply = self.get("/v1/channels/stable/release.json");
        assert_eq!(reply.status, 200, "{}", self.console.stderr());
        reply.json()
    }

    fn get(&self, path: &str) -> Reply {
        self.http
            .send(Method::GET, &self.console.url_of(path), Some(TOKEN), &[])
    }

    fn put(&self, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        self.http
            .send(Method::PUT, &self.console.url_of(path), token, body)
    }

    /// Uploads a release body as `publish --console` does.
    fn put_release(&self, channel: &str, manifest: &[u8], signature: &[u8]) -> Reply {
        let body = json!({
            "manifest": String::from_utf8_lossy(manifest),
            "signature": String::from_utf8_lossy(signature),
        });
        self.put(
            &format!("/v1/admin/channels/{channel}/release"),
            Some(TOKEN),
            body.to_string().as_bytes(),
        )
    }

    /// Every file of the channels and artifacts (the fleet database aside).
    fn files(&self) -> BTreeMap<String, String> {
        tree(&self.data.join("v1"))
    }

    /// History entry `sequence` of `stable`: manifest and signature bytes.
    fn history(&self, sequence: u64) -> (Vec<u8>, Vec<u8>) {
        let path = self
            .data
            .join(format!("v1/channels/stable/history/{sequence:010}.json"));
        let manifest = fs::read(&path).expect("history manifest");
        let signature = fs::read(path.with_extension("json.minisig")).expect("history signature");
        (manifest, signature)
    }

    /// History entry 1 with `edit` applied, signed by key `key` (as `bankswap sign` does).
    fn resigned(&self, key: &str, edit: impl FnOnce(&mut Value)) -> (Vec<u8>, Vec<u8>) {
        let mut manifest: Value =
            serde_json::from_slice(&self.history(1).0).expect("history manifest is JSON");
        edit(&mut manifest);
        let file = self.w.path(&format!("forged-{key}.json"));
        let bytes = serde_json::to_vec_pretty(&manifest).expect("JSON");
        fs::write(&file, &bytes).expect("forged manifest");
        self.w.sign(key, &file);
        let signature = fs::read(self.w.path(&format!("forged-{key}.json.minisig"))).expect("sig");
        (bytes, signature)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `len` bytes that zstd cannot shrink, so an archive is as large as its payload.
fn incompressible(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(b"seed");
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

#[test]
fn publish_console_uploads_releases_that_are_served_and_pushed() {
    let up = Uploads::new();
    let out = up.publish_version("1.0.0");
    assert!(
        out.stdout
            .contains("published payload 1.0.0 as sequence 1 on channel stable"),
        "{}",
        out.stdout
    );
    let v1 = up.served();
    assert_eq!(
        (v1["sequence"].as_u64(), v1["version"].as_str()),
        (Some(1), Some("1.0.0"))
    );
    let artifact = up.get(&format!(
        "/v1/{}",
        v1["artifact"]["path"].as_str().expect("path")
    ));
    assert_eq!(artifact.status, 200);
    assert_eq!(
        Some(sha256_hex(&artifact.body).as_str()),
        v1["artifact"]["sha256"].as_str()
    );
    // The history is served, zero-padded as on disk or not.
    let (manifest, signature) = up.history(1);
    let entry = up.get("/v1/channels/stable/history/1.json");
    assert_eq!((entry.status, &entry.body), (200, &manifest));
    let entry = up.get("/v1/channels/stable/history/0000000001.json.minisig");
    assert_eq!((entry.status, &entry.body), (200, &signature));

    // A request held on v1 is answered with v2 as soon as it is uploaded,
    // by a publish whose token comes from the environment and whose archive
    // is larger than any buffered request body would be allowed to be.
    let etag = format!(
        "\"{}\"",
        sha256_hex(&fs::read(up.data.join("v1/channels/stable/release.json")).expect("manifest"))
    );
    let held = up.http.spawn_get(
        &up.console
            .url_of("/v1/channels/stable/release.json?wait=60"),
        &[("if-none-match", &etag)],
    );
    let payload = up.w.payload("2.0.0", 1, 100);
    fs::write(
        payload.join("data/noise.bin"),
        incompressible(3 * 1024 * 1024),
    )
    .expect("noise");
    let started = Instant::now();
    let mut cmd = bankswap();
    cmd.args([
        "publish",
        "--key",
        &up.w.secret("release"),
        "--console",
        &up.console.url,
    ])
    .args(["--ca-cert", &up.ca.ca_pem.display().to_string()])
    .args([
        "--payload",
        &payload.display().to_string(),
        "--version",
        "2.0.0",
    ])
    .args(["--entrypoint", "bin/app --serve"])
    .env("BANKSWAP_TOKEN", TOKEN);
    let out: Run = cmd.output().expect("bankswap runs").into();
    assert_eq!(out.code, 0, "{out:?}\nconsole: {}", up.console.stderr());
    assert!(out.stdout.contains("2.0.0 as sequence 2"), "{}", out.stdout);
    let reply = up.http.finish(held);
    let (status, body) = (reply.status, reply.body);
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "pushed at once, not at the end of the wait"
    );
    let pushed: Value = serde_json::from_slice(&body).expect("manifest");
    assert_eq!(pushed["sequence"], 2);
    let v2 = up.served();
    assert_eq!(
        (v2["sequence"].as_u64(), v2["version"].as_str()),
        (Some(2), Some("2.0.0"))
    );
    assert!(v2["artifact"]["size"].as_u64().expect("size") > 3 * 1024 * 1024);

    // What the console wrote verifies as an agent checks it.
    let root = up.w.path("root");
    up.w.init(&root, &up.data);
    assert_eq!(crate::support::status(&root)["active_version"], "2.0.0");
}

#[test]
fn a_wrong_or_missing_token_gets_401_and_writes_nothing() {
    let up = Uploads::new();
    up.publish_version("1.0.0");
    let before = up.files();
    let payload = up.w.payload("2.0.0", 1, 100);
    let out = up.publish(
        "release",
        &[
            "--payload",
            &payload.display().to_string(),
            "--version",
            "2.0.0",
            "--entrypoint",
            "bin/app",
            "--token",
            "not-the-admin-token-at-all",
        ],
    );
    assert_fails_with(
        &out,
        &format!(
            "publish to {}: wrong admin token (HTTP 401)",
            up.console.url
        ),
    );
    assert!(
        out.stderr.contains("--token-file"),
        "a hint about the token: {}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let name = format!("/v1/admin/artifacts/{}.tar.zst", sha256_hex(b"x"));
    for token in [None, Some("not-the-admin-token-at-all")] {
        let reply = up.put(&name, token, b"x");
        assert_eq!(reply.status, 401, "{reply:?}");
        let (manifest, signature) = up.history(1);
        let body = json!({"manifest": String::from_utf8_lossy(&manifest), "signature": String::from_utf8_lossy(&signature)});
        let reply = up.put(
            "/v1/admin/channels/stable/release",
            token,
            body.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 401);
        assert!(reply.error().contains("admin token"), "{}", reply.error());
    }
    assert_eq!(up.files(), before, "nothing written");
}

#[test]
fn untrusted_replayed_and_malformed_releases_are_refused_and_write_nothing() {
    let up = Uploads::new();
    up.publish_version("1.0.0");
    up.publish_version("2.0.0");
    let before = up.files();

    // publish checks the console's keys before it uploads a byte.
    up.w.keygen("other");
    let payload = up.w.payload("3.0.0", 1, 100);
    let out = up.publish(
        "other",
        &[
            "--payload",
            &payload.display().to_string(),
            "--version",
            "3.0.0",
            "--entrypoint",
            "bin/app",
            "--token-file",
            &up.token_file.display().to_string(),
        ],
    );
    assert_fails_with(&out, "the console does not trust key");

    // The console itself re-verifies: a release signed by another key is 422.
    let (manifest, signature) = up.resigned("other", |m| m["sequence"] = json!(3));
    let reply = up.put_release("stable", &manifest, &signature);
    assert_eq!(reply.status, 422, "{reply:?}");
    assert!(reply.error().contains("unknown key"), "{}", reply.error());

    // Replays: a lower and an equal sequence, with their genuine signatures.
    for sequence in [1, 2] {
        let (manifest, signature) = up.history(sequence);
        let reply = up.put_release("stable", &manifest, &signature);
        assert_eq!(reply.status, 409, "{reply:?}");
        assert!(
            reply
                .error()
                .contains("not above the channel's current sequence 2"),
            "{}",
            reply.error()
        );
    }

    // Signed for another channel than the URL's.
    let (manifest, signature) = up.history(2);
    let reply = up.put_release("beta", &manifest, &signature);
    assert_eq!(reply.status, 422, "{reply:?}");
    assert!(reply.error().contains("channel"), "{}", reply.error());

    // Trusted and new, but naming an artifact the console does not have.
    let (manifest, signature) = up.resigned("release", |m| {
        let digest = sha256_hex(b"absent");
        m["sequence"] = json!(3);
        m["artifact"]["sha256"] = json!(digest);
        m["artifact"]["path"] = json!(format!("artifacts/{digest}.tar.zst"));
    });
    let reply = up.put_release("stable", &manifest, &signature);
    assert_eq!(reply.status, 422, "{reply:?}");
    assert!(
        reply.error().contains("is not on the console"),
        "{}",
        reply.error()
    );

    // Not the upload format, and over the size cap.
    let reply = up.put(
        "/v1/admin/channels/stable/release",
        Some(TOKEN),
        b"{\"manifest\": 1}",
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    let huge = json!({"manifest": "x".repeat(200 * 1024), "signature": ""});
    let reply = up.put(
        "/v1/admin/channels/stable/release",
        Some(TOKEN),
        huge.to_string().as_bytes(),
    );
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(reply.error().contains("limit"), "{}", reply.error());

    assert_eq!(up.files(), before, "nothing written");
    assert_eq!(up.served()["sequence"], 2);
}

#[test]
fn artifacts_are_kept_only_when_their_bytes_hash_to_their_name() {
    let up = Uploads::new();
    let bytes = b"an archive, as far as this test is concerned";
    let digest = sha256_hex(bytes);
    let path = format!("/v1/admin/artifacts/{digest}.tar.zst");
    let stored = up.data.join(format!("v1/artifacts/{digest}.tar.zst"));

    let reply = up.put(&path, Some(TOKEN), bytes);
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.json()["stored"], true);
    assert_eq!(fs::read(&stored).expect("stored"), bytes);
    let written = fs::metadata(&stored)
        .expect("meta")
        .modified()
        .expect("mtime");

    // Already there: checked, answered 200, not rewritten.
    let reply = up.put(&path, Some(TOKEN), bytes);
    assert_eq!(
        (reply.status, &reply.json()["stored"]),
        (200, &json!(false))
    );
    assert_eq!(
        fs::metadata(&stored)
            .expect("meta")
            .modified()
            .expect("mtime"),
        written
    );

    // Bytes that are not what the name says, new or existing: 422, nothing kept.
    let before = up.files();
    let other = format!("/v1/admin/artifacts/{}.tar.zst", sha256_hex(b"other"));
    for path in [&other, &path] {
        let reply = up.put(path, Some(TOKEN), b"tampered bytes");
        assert_eq!(reply.status, 422, "{reply:?}");
        assert!(reply.error().contains("hash to"), "{}", reply.error());
    }
    let reply = up.put(
        "/v1/admin/artifacts/not-a-digest.tar.zst",
        Some(TOKEN),
        bytes,
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(up.files(), before, "no file added, no temporary file left");
}

#[test]
fn rollback_to_re_signs_a_release_from_the_consoles_history() {
    let up = Uploads::new();
    up.publish_version("1.0.0");
    up.publish_version("2.0.0");
    let token = ["--token-file", &up.token_file.display().to_string()];
    let out = up.publish(
        "release",
        &[&["--rollback-to", "1.0.0"][..], &token].concat(),
    );
    assert_eq!(out.code, 0, "{out:?}\nconsole: {}", up.console.stderr());
    assert!(out.stdout.contains("1.0.0 as sequence 3"), "{}", out.stdout);
    let served = up.served();
    let first: Value = serde_json::from_slice(&up.history(1).0).expect("history 1");
    assert_eq!(served["sequence"], 3);
    assert_eq!(served["version"], "1.0.0");
    assert_eq!(served["downgrade"], true);
    assert_eq!(served["artifact"], first["artifact"]);

    let out = up.publish(
        "release",
        &[&["--rollback-to", "9.9.9"][..], &token].concat(),
    );
    assert_fails_with(&out, "no release of that version");
}

#[test]
fn rollback_to_never_re_signs_what_the_key_did_not_sign() {
    // The console trusts two keys; `--key` re-signs only its own releases,
    // so a console cannot get it to sign an archive it never vouched for.
    let up = Uploads::trusting(&["other"]);
    up.publish_signed("other", "1.0.0");
    up.publish_version("2.0.0");
    let before = up.files();
    let token = ["--token-file", &up.token_file.display().to_string()];
    let out = up.publish(
        "release",
        &[&["--rollback-to", "1.0.0"][..], &token].concat(),
    );
    assert_fails_with(&out, "--rollback-to 1.0.0: history entry 1 on");
    assert!(out.stderr.contains("not signed by --key"), "{}", out.stderr);
    assert_eq!(up.files(), before, "nothing written");
}

#[test]
fn uploads_are_disabled_without_an_admin_token_file() {
    let w = World::new();
    let data = w.path("console-data");
    let ca = make_test_ca(&w.path("tls"));
    let console = ConsoleProcess::start(&data, &ca, "127.0.0.1:0", &w.path("console.log"));
    let payload = w.payload("1.0.0", 1, 100);
    let out = run([
        "publish",
        "--key",
        &w.secret("release"),
        "--payload",
        &payload.display().to_string(),
        "--version",
        "1.0.0",
        "--entrypoint",
        "bin/app",
        "--console",
        &console.url,
        "--ca-cert",
        &ca.ca_pem.display().to_string(),
        "--token",
        TOKEN,
    ]);
    assert_fails_with(
        &out,
        &format!(
            "publish to {}: uploads are disabled on this console",
            console.url
        ),
    );
    assert!(out.stderr.contains("--admin-token-file"), "{}", out.stderr);
    let http = Http::new(&ca);
    let reply = http.send(
        Method::GET,
        &console.url_of("/v1/admin/channels/stable/history"),
        Some(TOKEN),
        &[],
    );
    assert_eq!(reply.status, 404);
    assert!(!data.join("v1").exists(), "nothing written");

    // An admin token file alone is an admin console without uploads; an
    // unreadable one is a usage error naming it.
    let alone = run([
        "console",
        "serve",
        "--data",
        &data.display().to_string(),
        "--insecure-http",
        "--admin-token-file",
        &w.path("absent").display().to_string(),
    ]);
    assert_eq!(alone.code, 2, "{alone:?}");
    assert!(alone.stderr.contains("absent"), "{}", alone.stderr);
}
