//! Stages an artifact file into a root, as the agent would, and prints what happened:
//! `cargo run --release -p bankswap-bank-layout --example stage -- ROOT ARTIFACT [tar|tar.gz|tar.zst]`.
//! For benchmarks against `sha256sum f && zstd -dc f | tar -x && sync`.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use bank_layout::{ArchiveFormat, BankRecord, Root, StageSpec};
use sha2::{Digest, Sha256};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(root), Some(artifact)) = (args.first(), args.get(1)) else {
        eprintln!("usage: stage ROOT ARTIFACT [tar|tar.gz|tar.zst] [SHA256]");
        return ExitCode::from(2);
    };
    let format = match args.get(2).map(String::as_str).unwrap_or("tar.zst") {
        "tar" => ArchiveFormat::Tar,
        "tar.gz" => ArchiveFormat::TarGz,
        _ => ArchiveFormat::TarZst,
    };
    match run(
        PathBuf::from(root),
        PathBuf::from(artifact),
        format,
        args.get(3).cloned(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    root: PathBuf,
    artifact: PathBuf,
    format: ArchiveFormat,
    sha256: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let size = std::fs::metadata(&artifact)?.len();
    // Without a digest on the command line, hash first (not timed).
    let sha256 = match sha256 {
        Some(sha) => sha,
        None => {
            let mut hasher = Sha256::new();
            let mut file = File::open(&artifact)?;
            let mut buf = vec![0; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            hex::encode(hasher.finalize())
        }
    };
    let (mut root, notes) = Root::open(&root)?;
    for note in notes {
        println!("recovery: {note}");
    }
    if root.state().phase == bank_layout::Phase::Trial {
        root.commit()?;
    }
    let record = BankRecord {
        version: "bench".into(),
        sequence: 1,
        // The archive's own program: the entrypoint check needs one (BENCH_ENTRYPOINT).
        command: std::env::var("BENCH_ENTRYPOINT").unwrap_or_else(|_| "bin/app".into()),
        ..BankRecord::default()
    };
    let spec = StageSpec {
        format,
        size,
        sha256: &sha256,
        record,
        unpacked_size: None,
        entries: None,
        allow_in_place: false,
    };
    let start = Instant::now();
    let bank = root.stage(File::open(&artifact)?, spec, &mut |_| {})?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "staged {size} bytes into {bank} in {secs:.3} s ({:.0} MiB/s compressed)",
        size as f64 / secs / (1 << 20) as f64
    );
    Ok(())
}
