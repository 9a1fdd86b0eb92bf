//! A static HTTPS host serves a channel too (SPEC §4): nginx serves the data
//! folder that `publish --to` writes, the agent polls it (nginx ignores the
//! push `wait`), resumes with `Range`, and remembers that the host takes no
//! reports. scripts/setup-test-deps.sh installs Debian's nginx.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::live::{AgentProcess, AgentSettings};
use crate::support::tls::{TestCa, make_test_ca};
use crate::support::{World, wait};

/// nginx in the foreground, as one process, with everything under a temp folder.
pub struct Nginx {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl Nginx {
    /// Starts nginx on a free port. nginx cannot listen on port 0 and say which
    /// port it got (and it crashes on an inherited socket without a master
    /// process), so a port is picked and, should another process take it first
    /// (nginx then fails to bind and exits), another one is picked.
    fn start(data: &Path, ca: &TestCa, dir: &Path) -> Nginx {
        Nginx::start_with(data, ca, dir, "")
    }

    /// Like `start`, with extra directives in the `server` block (e.g. `ssl_verify_client on;`).
    pub fn start_with(data: &Path, ca: &TestCa, dir: &Path, server_extra: &str) -> Nginx {
        for _ in 0..BIND_ATTEMPTS {
            if let Some(nginx) = Nginx::try_start(data, ca, dir, server_extra) {
                return nginx;
            }
        }
        panic!("nginx found no free port in {BIND_ATTEMPTS} attempts");
    }

    fn try_start(data: &Path, ca: &TestCa, dir: &Path, server_extra: &str) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("nginx is not installed: run scripts/setup-test-deps.sh");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        fs::create_dir_all(dir).expect("nginx dir");
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  default_type application/octet-stream;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    {server_extra}\n    location /v1/ {{ alias {data}/v1/; }}\n  }}\n}}\n",
            cert = ca.cert_pem.display(),
            key = ca.key_pem.display(),
            data = data.display(),
        );
        fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        // Each attempt reads only its own errors.
        let _ = fs::remove_file(dir.join("error.log"));
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts");
        let error_log = || fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        let outcome = wait::until(NGINX_START, || {
            if let Some(status) = child.try_wait().expect("nginx status") {
                return Some(Err(status));
            }
            (TcpStream::connect(("127.0.0.1", port)).is_ok() && !error_log().contains("bind()"))
                .then_some(Ok(()))
        });
        match outcome {
            Some(Ok(())) => Some(Nginx { child, port }),
            Some(Err(status)) => {
                let log = error_log();
                assert!(
                    log.contains("Address already in use"),
                    "nginx exited ({status}): {log}"
                );
                None // the port was taken meanwhile: try another
            }
            None => panic!(
                "nginx did not listen within {NGINX_START:?}: {}",
                error_log()
            ),
        }
    }
}

/// How long nginx may take to listen on a loaded machine.
const NGINX_START: Duration = Duration::from_secs(10);

/// How many free ports nginx is tried on.
const BIND_ATTEMPTS: usize = 5;

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish_sleeper(w: &World, data: &Path, version: &str) {
    let dir = w.script_payload(version, "exec sleep 1000");
    w.publish(data, &dir, version, &[]);
}

#[test]
fn an_agent_updates_from_nginx_by_polling() {
    let w = World::new();
    let data = w.path("data");
    publish_sleeper(&w, &data, "1.0.0");
    let ca = make_test_ca(&w.path("tls"));
    let nginx = Nginx::start(&data, &ca, &w.path("nginx"));
    let url = format!("https://localhost:{}", nginx.port);
    let agent = AgentProcess::start(
        &w,
        &ca,
        &w.path("root"),
        &AgentSettings {
            console: &url,
            extra: "[health]\ngrace = \"1s\"\n",
        },
    );
    agent.wait_committed("1.0.0");
    publish_sleeper(&w, &data, "2.0.0");
    agent.wait_committed("2.0.0");
    assert_eq!(agent.status()["previous_version"], "1.0.0");
    let log = agent.log();
    assert_eq!(
        log.matches("takes no reports").count(),
        1,
        "a static host is asked once: {log}"
    );
    let access = fs::read_to_string(w.path("nginx/access.log")).expect("access log");
    assert!(
        access.contains("GET /v1/artifacts/"),
        "artifacts came from nginx: {access}"
    );
}
