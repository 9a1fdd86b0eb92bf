//! A real console for the admin-facing stories (tests/admin.rs,
//! tests/rollout.rs): a data folder holding release 1.0.0 (sequence 1) on
//! `stable`, an admin token file, a test CA, and an HTTPS client trusting it.

use std::fs;
use std::path::PathBuf;

use super::World;
use super::https::Http;
use super::live::ConsoleProcess;
use super::tls::{TestCa, make_test_ca};

/// A running console with an admin token, over a data folder with 1.0.0.
pub struct AdminConsole {
    /// The test's folder (keys, payloads, roots).
    pub world: World,
    /// The console's data folder.
    pub data: PathBuf,
    /// The CA of the console's certificate.
    pub ca: TestCa,
    /// The `--admin-token-file`.
    pub token_file: PathBuf,
    /// The console.
    pub console: ConsoleProcess,
    /// A client trusting `ca`.
    pub http: Http,
}

impl AdminConsole {
    /// Starts it with admin token `token`, anonymous reports allowed, and
    /// `--trust` of the release key (so rollbacks are re-verified).
    pub fn start(token: &str) -> AdminConsole {
        let world = World::new();
        let ca = make_test_ca(&world.path("tls"));
        let data = world.path("console");
        let payload = world.payload("1.0.0", 2, 100);
        world.publish(&data, &payload, "1.0.0", &[]);
        let token_file = world.path("admin-token");
        fs::write(&token_file, format!("{token}\n")).expect("token file");
        let console = ConsoleProcess::start_with(
            &data,
            &ca,
            "127.0.0.1:0",
            &world.path("console.log"),
            &[
                "--admin-token-file",
                &token_file.display().to_string(),
                "--trust",
                &world.public("release"),
                "--allow-anonymous-reports",
            ],
        );
        let http = Http::new(&ca);
        AdminConsole {
            world,
            data,
            ca,
            token_file,
            console,
            http,
        }
    }
}
