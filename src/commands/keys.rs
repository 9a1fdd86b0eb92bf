//! `keygen`, `sign` and `verify`: minisign-compatible keys and signatures.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use signing::{SecretKey, Signature};

use crate::channel::{MAX_SIGNATURE_BYTES, read_capped, signature_path};
use crate::clock;
use crate::config::load_public_key;
use crate::error::UsageError;

/// `bankswap keygen --out PREFIX`: PREFIX.key (mode 0600) and PREFIX.pub. Never overwrites.
pub fn keygen(prefix: &Path) -> anyhow::Result<()> {
    let secret_path = with_suffix(prefix, ".key");
    let public_path = with_suffix(prefix, ".pub");
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(UsageError::new(format!(
                "{} exists already; refusing to overwrite a key",
                path.display()
            ))
            .into());
        }
    }
    let secret = SecretKey::generate().context("generating a key")?;
    let public = secret.public_key();
    write_new(&secret_path, secret.to_file_string().as_bytes(), 0o600)?;
    write_new(&public_path, public.to_file_string().as_bytes(), 0o644)?;
    println!(
        "secret key: {} (keep it off the agents)",
        secret_path.display()
    );
    println!("public key: {}", public_path.display());
    println!("trusted_keys = [\"{}\"]", public.to_base64());
    Ok(())
}

/// `bankswap sign --key FILE FILE`: writes FILE.minisig (prehashed, like `minisign -S`).
pub fn sign(key_path: &Path, file: &Path) -> anyhow::Result<()> {
    let secret = read_secret_key(key_path)?;
    let prehash = signing::prehash(BufReader::new(
        File::open(file).with_context(|| format!("reading {}", file.display()))?,
    ))
    .with_context(|| format!("reading {}", file.display()))?;
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let comment = format!(
        "timestamp:{}\tfile:{name}\thashed",
        clock::unix(clock::now_seconds())
    );
    let signature = secret.sign_prehashed(&prehash, &comment);
    let out = signature_path(file);
    bank_layout::write_atomic(&out, signature.to_file_string().as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("signed {} -> {}", file.display(), out.display());
    Ok(())
}

/// `bankswap verify --pub FILE FILE`: checks FILE.minisig; exit 1 when it does not hold.
pub fn verify(public: &str, file: &Path) -> anyhow::Result<()> {
    let key = load_public_key(public, Path::new(".")).map_err(UsageError::new)?;
    let sig_path = signature_path(file);
    let sig_bytes = read_capped(&sig_path, MAX_SIGNATURE_BYTES)
        .with_context(|| format!("reading {}", sig_path.display()))?;
    let text = String::from_utf8(sig_bytes).map_err(|_| {
        anyhow::anyhow!(
            "{}: not a minisign signature (not UTF-8)",
            sig_path.display()
        )
    })?;
    let signature =
        Signature::parse(&text).with_context(|| format!("signature {}", sig_path.display()))?;
    let keys = [key];
    let what = || format!("{} with {}", file.display(), sig_path.display());
    if signature.is_prehashed() {
        let prehash = signing::prehash(BufReader::new(
            File::open(file).with_context(|| format!("reading {}", file.display()))?,
        ))
        .with_context(|| format!("reading {}", file.display()))?;
        signature
            .verify_prehashed(&keys, &prehash)
            .with_context(what)?;
    } else {
        let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        signature.verify(&keys, &data).with_context(what)?;
    }
    println!("Signature and comment signature verified");
    println!("Trusted comment: {}", signature.trusted_comment());
    Ok(())
}

/// Reads a minisign secret key file, with the file named in any error.
pub fn read_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("secret key {}", path.display()))?;
    SecretKey::parse(&text).with_context(|| format!("secret key {}", path.display()))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
