//! Delta updates (issue 14): `publish --to` writes a file index and one
//! object per file beside the full artifact; an agent running v1 stages v2
//! from its running bank plus only the objects that changed, fetched from a
//! plain static host (nginx, whose access log counts the bytes), and the bank
//! is byte-identical to a full install. Past `[update] delta_max_ratio` it
//! downloads the full artifact. Offline, `apply --bundle` of a delta bundle
//! (no full artifact) takes the same way, and every hostile index or object
//! fails with one line, leaving both banks and `state.json` untouched, so
//! `rollback` still works.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::static_host::Nginx;
use crate::support::live::AgentProcess;
use crate::support::live::AgentSettings;
use crate::support::tls::make_test_ca;
use crate::support::{World, assert_fails_with, bank_files, manifest, run_ok, status};

/// Data files of the test payload, and how many of them v2 changes.
const FILES: usize = 40;
/// Bytes per data file.
const FILE_BYTES: usize = 50_000;
/// Data files v2 changes.
const CHANGED: usize = 3;

/// `len` bytes that do not compress (xorshift from `seed`), like real binaries.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A payload of [`FILES`] data files, file `i` seeded by `seeds(i)`.
fn payload(w: &World, version: &str, seeds: impl Fn(usize) -> u64) -> PathBuf {
    let dir = w.script_payload(version, &format!("echo {version}\nexec sleep 1000"));
    fs::create_dir_all(dir.join("data")).expect("payload dir");
    fs::write(dir.join("VERSION"), format!("{version}\n")).expect("version file");
    for i in 0..FILES {
        fs::write(
            dir.join(format!("data/file-{i:04}.bin")),
            noise(seeds(i), FILE_BYTES),
        )
        .expect("data file");
    }
    std::os::unix::fs::symlink("bin/app", dir.join("app")).expect("link");
    dir
}

/// v1, and v2 with [`CHANGED`] data files rewritten (besides `VERSION` and
/// `bin/app`, which name the version).
fn payloads(w: &World) -> (PathBuf, PathBuf) {
    let v1 = payload(w, "1.0.0", |i| i as u64 + 1);
    let v2 = payload(w, "2.0.0", |i| {
        if i < CHANGED {
            1000 + i as u64
        } else {
            i as u64 + 1
        }
    });
    (v1, v2)
}

/// The objects (by sha256) of the files v2 has and v1 has not, and their total size.
fn changed_objects(data: &Path, v1: &Value, v2: &Value) -> (Vec<String>, u64) {
    let files = |m: &Value| -> BTreeMap<String, u64> {
        let path = data
            .join("v1")
            .join(m["index"]["path"].as_str().expect("index path"));
        let index: Value = serde_json::from_slice(&fs::read(path).expect("index")).expect("json");
        index["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["type"] == "file")
            .map(|e| {
                (
                    e["sha256"].as_str().expect("sha").to_owned(),
                    e["packed"].as_u64().expect("packed"),
                )
            })
            .collect()
    };
    let old = files(v1);
    let new: Vec<(String, u64)> = files(v2)
        .into_iter()
        .filter(|(sha, _)| !old.contains_key(sha))
        .collect();
    let bytes = new.iter().map(|(_, packed)| packed).sum();
    (new.into_iter().map(|(sha, _)| sha).collect(), bytes)
}

/// nginx's access log, as (path, status, body bytes) per request.
fn served(nginx_dir: &Path) -> Vec<(String, u16, u64)> {
    let log = fs::read_to_string(nginx_dir.join("access.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| {
            // ... "GET /v1/... HTTP/1.1" 200 1234 "-" "bankswap/0.1.0"
            let (_, rest) = line.split_once("\"GET ")?;
            let (path, rest) = rest.split_once(' ')?;
            let (_, rest) = rest.split_once("\" ")?;
            let mut fields = rest.split(' ');
            let status = fields.next()?.parse().ok()?;
            let bytes = fields.next()?.parse().ok()?;
            Some((path.to_owned(), status, bytes))
        })
        .collect()
}

/// A world whose data folder nginx serves, with v1 published and an agent that installed it.
struct Host {
    w: World,
    data: PathBuf,
    v2: PathBuf,
    nginx: Nginx,
    agent: AgentProcess,
    v1_manifest: Value,
}

impl Host {
    fn start(extra: &str) -> Host {
        let w = World::new();
        let data = w.path("data");
        let (v1, v2) = payloads(&w);
        w.publish(&data, &v1, "1.0.0", &[]);
        let ca = make_test_ca(&w.path("tls"));
        let nginx = Nginx::start_with(&data, &ca, &w.path("nginx"), "");
        let url = format!("https://localhost:{}", nginx.port);
        let extra = format!("[health]\ngrace = \"1s\"\n{extra}");
        let agent = AgentProcess::start(
            &w,
            &ca,
            &w.path("root"),
            &AgentSettings {
                console: &url,
                extra: &extra,
            },
        );
        agent.wait_committed("1.0.0");
        let v1_manifest = manifest(&data);
        Host {
            w,
            data,
            v2,
            nginx,
            agent,
            v1_manifest,
        }
    }

    /// Publishes v2 and returns what nginx served from then on once the agent committed it.
    fn update(&self) -> Vec<(String, u16, u64)> {
        let before = served(&self.w.path("nginx")).len();
        self.w.publish(&self.data, &self.v2, "2.0.0", &[]);
        self.agent.wait_committed("2.0.0");
        served(&self.w.path("nginx")).split_off(before)
    }

    /// v2 installed in full, offline, into a fresh root: the bank a delta must equal.
    fn full_install_files(&self) -> BTreeMap<String, String> {
        let root = self.w.path("full-root");
        self.w.init(&root, &self.data);
        assert_eq!(status(&root)["active_version"], "2.0.0");
        bank_files(&root, "Bank1")
    }

    /// The agent root's active bank.
    fn active_bank(&self) -> String {
        status(&self.w.path("root"))["active_bank"]
            .as_str()
            .expect("bank")
            .to_owned()
    }

    /// The agent's active bank holds exactly what v2 installed in full holds.
    fn assert_active_is_full_install(&self) {
        let root = self.w.path("root");
        assert_eq!(
            bank_files(&root, &self.active_bank()),
            self.full_install_files()
        );
    }
}

#[test]
fn an_agent_fetches_only_the_changed_objects_from_a_static_host() {
    let host = Host::start("");
    let requests = host.update();
    let v2_manifest = manifest(&host.data);
    let (changed, changed_bytes) = changed_objects(&host.data, &host.v1_manifest, &v2_manifest);
    assert_eq!(
        changed.len(),
        CHANGED + 2,
        "VERSION, bin/app and the data files"
    );

    let artifact = v2_manifest["artifact"]["path"].as_str().expect("artifact");
    assert!(
        !requests.iter().any(|(path, ..)| path.ends_with(artifact)),
        "the full artifact was not downloaded: {requests:?}"
    );
    let objects: Vec<_> = requests
        .iter()
        .filter(|(path, ..)| path.contains("/objects/"))
        .collect();
    for sha in &changed {
        assert!(
            objects
                .iter()
                .any(|(path, status, _)| path.ends_with(&format!("{sha}.zst")) && *status == 200),
            "object {sha} fetched: {objects:?}"
        );
    }
    assert_eq!(
        objects.len(),
        changed.len(),
        "only changed objects: {objects:?}"
    );
    let object_bytes: u64 = objects.iter().map(|(_, _, bytes)| bytes).sum();
    let index_bytes = v2_manifest["index"]["size"].as_u64().expect("index size");
    let total: u64 = requests
        .iter()
        .filter(|(path, ..)| path.contains("/artifacts/") || path.contains("/delta/"))
        .map(|(_, _, bytes)| bytes)
        .sum();
    assert_eq!(object_bytes, changed_bytes);
    assert_eq!(total, changed_bytes + index_bytes, "{requests:?}");
    let full = v2_manifest["artifact"]["size"].as_u64().expect("size");
    // Done means (issue 14): at most 1.2x the compressed changed files on the
    // wire over HTTPS, by the host's log and by the agent's own counter.
    assert!(
        total * 10 <= changed_bytes * 12,
        "{total} bytes on the wire for {changed_bytes} bytes of changed objects"
    );
    assert!(
        total * 5 < full,
        "{total} bytes on the wire for a {full}-byte artifact"
    );

    let log = host.agent.log();
    assert!(
        log.contains(&format!(
            "staged 2.0.0 via delta: downloaded {total} of {full} bytes, saved {}",
            full - total
        )) && log.contains(&format!("path=\"delta\" downloaded={total} full={full}")),
        "{log}"
    );
    let last = &host.agent.status()["last_staging"];
    assert_eq!(
        *last,
        serde_json::json!({
            "version": "2.0.0", "path": "delta", "downloaded_bytes": total,
            "full_bytes": full, "saved_bytes": full - total, "reason": null,
        })
    );
    let text = run_ok([
        "status",
        "--root",
        &host.w.path("root").display().to_string(),
    ])
    .stdout;
    assert!(
        text.contains(&format!(
            "staged:     2.0.0 via delta: downloaded {total} of {full} bytes, saved {}",
            full - total
        )),
        "{text}"
    );
    host.assert_active_is_full_install();
}

#[test]
fn past_the_ratio_the_agent_downloads_the_full_artifact() {
    let host = Host::start("[update]\ndelta_max_ratio = 0.001\n");
    let requests = host.update();
    let v2_manifest = manifest(&host.data);
    let artifact = v2_manifest["artifact"]["path"].as_str().expect("artifact");
    assert!(
        requests
            .iter()
            .any(|(path, status, _)| path.ends_with(artifact) && *status == 200),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|(path, ..)| path.contains("/objects/")),
        "{requests:?}"
    );
    let log = host.agent.log();
    assert!(
        log.contains("staging 2.0.0 via the full artifact") && log.contains("delta_max_ratio"),
        "{log}"
    );
    let last = &host.agent.status()["last_staging"];
    let index_bytes = v2_manifest["index"]["size"].as_u64().expect("index size");
    let full = v2_manifest["artifact"]["size"].as_u64().expect("size");
    assert_eq!(last["path"], "full", "{last}");
    assert_eq!(last["downloaded_bytes"], full + index_bytes, "{last}");
    assert_eq!(last["saved_bytes"], 0, "{last}");
    let reason = last["reason"].as_str().expect("reason");
    assert!(
        reason.contains("above [update] delta_max_ratio 0.001"),
        "{reason}"
    );
    host.assert_active_is_full_install();
    drop(host.nginx);
}

#[test]
fn a_missing_object_falls_back_to_the_full_artifact() {
    let host = Host::start("");
    // Published, then one changed object lost on the host.
    let v1_manifest = host.v1_manifest.clone();
    let before = served(&host.w.path("nginx")).len();
    host.w.publish(&host.data, &host.v2, "2.0.0", &[]);
    let v2_manifest = manifest(&host.data);
    let (changed, _) = changed_objects(&host.data, &v1_manifest, &v2_manifest);
    let object = host
        .data
        .join(format!("v1/delta/objects/{}.zst", changed[0]));
    fs::remove_file(&object).expect("remove object");
    host.agent.wait_committed("2.0.0");
    let requests = served(&host.w.path("nginx")).split_off(before);
    assert!(
        requests.iter().any(
            |(path, status, _)| path.ends_with(&format!("{}.zst", changed[0])) && *status == 404
        ),
        "the object was asked for: {requests:?}"
    );
    let artifact = v2_manifest["artifact"]["path"].as_str().expect("artifact");
    assert!(
        requests
            .iter()
            .any(|(path, status, _)| path.ends_with(artifact) && *status == 200),
        "then the full artifact: {requests:?}"
    );
    let log = host.agent.log();
    let why = format!("object {} is unavailable", changed[0]);
    assert!(
        log.lines()
            .any(|l| l.contains("staged 2.0.0 via the full artifact") && l.contains(&why)),
        "{log}"
    );
    let last = &host.agent.status()["last_staging"];
    assert_eq!(last["path"], "full", "{last}");
    let reason = last["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&why) && reason.contains("404") && !reason.contains('\n'),
        "{reason}"
    );
    assert!(host.agent.status()["last_error"].is_null());
    host.assert_active_is_full_install();
    assert!(
        !host.w.path("root").join(".staging").exists(),
        "no scratch folder left"
    );
}

#[test]
fn a_host_without_the_index_serves_the_full_artifact() {
    let host = Host::start("");
    host.w.publish(&host.data, &host.v2, "2.0.0", &[]);
    let index = host.data.join("v1").join(
        manifest(&host.data)["index"]["path"]
            .as_str()
            .expect("index"),
    );
    fs::remove_file(&index).expect("remove index");
    host.agent.wait_committed("2.0.0");
    let last = &host.agent.status()["last_staging"];
    assert_eq!(last["path"], "full", "{last}");
    let reason = last["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("no file index: ") && reason.contains("404"),
        "{reason}"
    );
    host.assert_active_is_full_install();
}

/// Offline: v1 and v2 in a bundle, a root running v1 installed from it.
struct Offline {
    w: World,
    data: PathBuf,
    root: PathBuf,
}

impl Offline {
    fn new() -> Offline {
        let w = World::new();
        let data = w.path("data");
        let (v1, v2) = payloads(&w);
        w.publish(&data, &v1, "1.0.0", &[]);
        let root = w.path("root");
        w.init(&root, &data);
        w.publish(&data, &v2, "2.0.0", &[]);
        Offline { w, data, root }
    }

    fn snapshot(&self) -> (Vec<u8>, BTreeMap<String, String>, BTreeMap<String, String>) {
        (
            fs::read(self.root.join("state.json")).expect("state"),
            bank_files(&self.root, "Bank1"),
            bank_files(&self.root, "Bank2"),
        )
    }

    /// The v2 index's objects folder and index file.
    fn index_path(&self) -> PathBuf {
        let m = manifest(&self.data);
        self.data
            .join("v1")
            .join(m["index"]["path"].as_str().expect("index"))
    }

    fn object_path(&self, sha: &str) -> PathBuf {
        self.data.join(format!("v1/delta/objects/{sha}.zst"))
    }

    /// A changed object of v2 (not in v1).
    fn changed_object(&self) -> String {
        let history = self.data.join("v1/channels/stable/history");
        let mut entries: Vec<_> = fs::read_dir(&history)
            .expect("history")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        entries.sort();
        let v1: Value = serde_json::from_slice(&fs::read(&entries[0]).expect("v1")).expect("json");
        let (changed, _) = changed_objects(&self.data, &v1, &manifest(&self.data));
        changed[0].clone()
    }

    /// Makes the bundle a delta bundle: without its full artifact.
    fn drop_artifact(&self) {
        fs::remove_file(crate::support::artifact_path(&self.data)).expect("remove artifact");
    }

    /// `apply` fails with `needle` on one line, changes nothing, and rollback works after.
    fn apply_fails_and_rollback_works(&self, needle: &str) {
        self.drop_artifact();
        let before = self.snapshot();
        let out = self.w.apply(&self.root, &self.data);
        assert_fails_with(&out, needle);
        assert_eq!(self.snapshot(), before, "banks and state.json untouched");
        assert!(
            !self.root.join(".staging").exists(),
            "no scratch folder left"
        );
        assert_eq!(status(&self.root)["active_version"], "1.0.0");
    }
}

#[test]
fn offline_apply_stages_by_delta_and_equals_the_full_install() {
    let o = Offline::new();
    // The full install to compare with, made before the full artifact is spoilt.
    let fresh = o.w.path("fresh");
    o.w.init(&fresh, &o.data);
    // A delta bundle: the manifest, the index and the objects, no artifact.
    o.drop_artifact();
    let out = o.w.apply(&o.root, &o.data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(bank_files(&o.root, "Bank2"), bank_files(&fresh, "Bank1"));
    // The same record as online: status says the delta and what it saved.
    let m = manifest(&o.data);
    let full = m["artifact"]["size"].as_u64().expect("size");
    let last = &status(&o.root)["last_staging"];
    assert_eq!(last["path"], "delta", "{last}");
    assert_eq!(last["version"], "2.0.0", "{last}");
    let read = last["downloaded_bytes"].as_u64().expect("downloaded");
    assert!(read > 0 && read * 5 < full, "{last}");
    assert_eq!(last["saved_bytes"], full - read, "{last}");
    // And the full install says it took the full artifact, and why.
    let last = &status(&fresh)["last_staging"];
    assert_eq!(last["path"], "full", "{last}");
    assert_eq!(
        last["reason"], "the bundle carries the full artifact",
        "{last}"
    );
    // And rollback returns to v1, whose bank the delta only read.
    run_ok(["rollback", "--root", &o.root.display().to_string()]);
    assert_eq!(status(&o.root)["active_version"], "1.0.0");
}

#[test]
fn an_object_with_other_bytes_is_refused() {
    let o = Offline::new();
    let sha = o.changed_object();
    let other = zstd::encode_all(&b"not the file"[..], 3).expect("zstd");
    let path = o.object_path(&sha);
    let packed = fs::metadata(&path).expect("object").len() as usize;
    let mut bytes = other;
    bytes.resize(packed, 0);
    fs::write(&path, &bytes).expect("write");
    o.apply_fails_and_rollback_works("object for `");
}

#[test]
fn an_object_longer_than_announced_is_refused() {
    let o = Offline::new();
    let path = o.object_path(&o.changed_object());
    let mut bytes = fs::read(&path).expect("object");
    bytes.extend_from_slice(&[0; 16]);
    fs::write(&path, bytes).expect("write");
    o.apply_fails_and_rollback_works("is larger than the");
}

#[test]
fn a_missing_object_is_refused_offline() {
    let o = Offline::new();
    let sha = o.changed_object();
    fs::remove_file(o.object_path(&sha)).expect("remove");
    o.apply_fails_and_rollback_works(&format!("fetching object {sha} failed"));
}

#[test]
fn an_index_that_is_not_the_signed_one_is_refused() {
    let o = Offline::new();
    let path = o.index_path();
    let mut bytes = fs::read(&path).expect("index");
    bytes[10] ^= 1;
    fs::write(&path, bytes).expect("write");
    o.apply_fails_and_rollback_works("does not match the manifest");
}

/// Writes `edit`ed index JSON as the v2 index and re-signs the manifest
/// pointing at it (what a compromised pipeline could sign).
fn signed_index(o: &Offline, edit: impl FnOnce(&mut Vec<Value>)) {
    let path = o.index_path();
    let mut index: Value = serde_json::from_slice(&fs::read(&path).expect("index")).expect("json");
    edit(index["entries"].as_array_mut().expect("entries"));
    let bytes = serde_json::to_vec(&index).expect("json");
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let rel = format!("delta/{sha}.index.json");
    fs::write(o.data.join("v1").join(&rel), &bytes).expect("write");
    o.w.resign(&o.data, |m| {
        m["index"] = serde_json::json!({ "path": rel, "size": bytes.len(), "sha256": sha });
    });
}

#[test]
fn a_signed_index_escaping_the_bank_is_refused() {
    for bad in ["../escape", "/etc/escape", "data/../../escape"] {
        let o = Offline::new();
        signed_index(&o, |entries| {
            let mut file = entries
                .iter()
                .find(|e| e["type"] == "file")
                .expect("a file")
                .clone();
            file["path"] = bad.into();
            entries.push(file);
        });
        o.apply_fails_and_rollback_works("escapes the bank");
    }
}

#[test]
fn a_signed_index_with_a_duplicate_entry_is_refused() {
    let o = Offline::new();
    signed_index(&o, |entries| {
        let file = entries
            .iter()
            .find(|e| e["type"] == "file")
            .expect("a file")
            .clone();
        entries.push(file);
    });
    o.apply_fails_and_rollback_works("is listed twice");
}

/// The admin token of the console that takes `publish --console` uploads.
const TOKEN: &str = "delta-admin-token-0123456789";

/// `publish --console` of `payload` as `version` to `live`'s console.
fn publish_to_console(
    live: &crate::support::live::Live,
    token_file: &Path,
    payload: &Path,
    version: &str,
) {
    let out = crate::support::run([
        "publish",
        "--key",
        &live.w.secret("release"),
        "--payload",
        &payload.display().to_string(),
        "--version",
        version,
        "--entrypoint",
        "bin/app --serve",
        "--console",
        &live.console.url,
        "--ca-cert",
        &live.ca.ca_pem.display().to_string(),
        "--token-file",
        &token_file.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{out:?}\nconsole: {}", live.console.stderr());
}

#[test]
fn the_console_serves_indexes_and_objects_with_range_and_agents_stage_deltas_from_it() {
    let w = World::new();
    let token_file = w.path("admin-token");
    fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let data = w.path("console-data");
    fs::create_dir_all(&data).expect("data");
    let ca = make_test_ca(&w.path("tls"));
    let args = [
        "--allow-anonymous-reports".to_owned(),
        "--admin-token-file".to_owned(),
        token_file.display().to_string(),
        "--trust".to_owned(),
        w.public("release"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let console = crate::support::live::ConsoleProcess::start_with(
        &data,
        &ca,
        "127.0.0.1:0",
        &w.path("console.log"),
        &args,
    );
    let live = crate::support::live::Live {
        w,
        data,
        ca,
        console,
    };
    let (v1, v2) = payloads(&live.w);
    // Both releases uploaded with `publish --console`: the index and objects too.
    publish_to_console(&live, &token_file, &v1, "1.0.0");
    let agent = live.agent("root", "[health]\ngrace = \"1s\"\n");
    agent.wait_committed("1.0.0");
    let v1_manifest = manifest(&live.data);
    assert!(v1_manifest["index"]["path"].is_string(), "{v1_manifest}");
    publish_to_console(&live, &token_file, &v2, "2.0.0");
    agent.wait_committed("2.0.0");
    assert_eq!(agent.status()["last_staging"]["path"], "delta");
    let v2_manifest = manifest(&live.data);
    let (changed, changed_bytes) = changed_objects(&live.data, &v1_manifest, &v2_manifest);
    let full = v2_manifest["artifact"]["size"].as_u64().expect("size");
    let index_bytes = v2_manifest["index"]["size"].as_u64().expect("index size");
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "staged 2.0.0 via delta: downloaded {} of {full} bytes",
            changed_bytes + index_bytes
        )),
        "{log}"
    );

    // An object, whole and resumed with Range, as nginx would serve it.
    let http = crate::support::https::Http::new(&live.ca);
    let url = live
        .console
        .url_of(&format!("/v1/delta/objects/{}.zst", changed[0]));
    let object = fs::read(
        live.data
            .join(format!("v1/delta/objects/{}.zst", changed[0])),
    )
    .expect("object");
    let whole = http.get(&url, &[]);
    assert_eq!((whole.status, whole.body.clone()), (200, object.clone()));
    let tail = http.get(&url, &[("range", "bytes=10-")]);
    assert_eq!((tail.status, tail.body), (206, object[10..].to_vec()));
    let index = live.console.url_of(&format!(
        "/v1/{}",
        v2_manifest["index"]["path"].as_str().expect("index")
    ));
    assert_eq!(http.get(&index, &[]).status, 200);
    // (reqwest resolves a literal `..` itself; the encoded one reaches the console.)
    for bad in [
        "objects/%2e%2e%2f%2e%2e%2fchannels%2fstable%2frelease.json",
        "objects/abc.zst",
        "x.index.json",
    ] {
        let reply = http.get(&live.console.url_of(&format!("/v1/delta/{bad}")), &[]);
        assert_eq!(reply.status, 404, "{bad}");
    }
    // Uploads are the admin's, and checked: an object must unpack to its name.
    let stored = fs::read_dir(live.data.join("v1/delta/objects"))
        .expect("objects")
        .count();
    let forged = live
        .console
        .url_of(&format!("/v1/admin/delta/objects/{}.zst", "a".repeat(64)));
    let zst = zstd::encode_all(&b"other bytes"[..], 3).expect("zstd");
    let reply = http.send(reqwest::Method::PUT, &forged, Some(TOKEN), &zst);
    assert_eq!(reply.status, 422, "{:?}", reply.body);
    let reply = http.send(reqwest::Method::PUT, &forged, Some("wrong"), &zst);
    assert_eq!(reply.status, 401);
    let reply = http.send(reqwest::Method::PUT, &forged, Some(TOKEN), b"not zstd");
    assert_eq!(reply.status, 422);
    assert_eq!(
        fs::read_dir(live.data.join("v1/delta/objects"))
            .expect("objects")
            .count(),
        stored,
        "nothing stored"
    );
}

#[test]
fn a_running_bank_edited_by_hand_is_staged_in_full() {
    let host = Host::start("");
    let root = host.w.path("root");
    let active = host.active_bank();
    // An unchanged file of v2, edited in the running bank: its record is stale now.
    fs::write(root.join(&active).join("data/file-0010.bin"), "edited").expect("edit");
    let requests = host.update();
    let artifact = manifest(&host.data)["artifact"]["path"]
        .as_str()
        .expect("artifact")
        .to_owned();
    assert!(
        requests
            .iter()
            .any(|(path, status, _)| path.ends_with(&artifact) && *status == 200),
        "{requests:?}"
    );
    let log = host.agent.log();
    assert!(
        log.contains("`data/file-0010.bin` no longer matches its record"),
        "{log}"
    );
    host.assert_active_is_full_install();
}
