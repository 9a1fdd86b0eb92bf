//! The agent reaches its console through an HTTP proxy with basic auth
//! (`[proxy]`): a real CONNECT proxy on loopback that refuses wrong credentials.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;

use crate::support::live::{Live, signal, wait_for};

/// Connections the test proxy serves at most (it stops by itself).
const MAX_CONNECTIONS: usize = 256;

/// A CONNECT proxy demanding `Proxy-Authorization: Basic user:password`.
struct ConnectProxy {
    port: u16,
    tunnels: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl ConnectProxy {
    fn start(user: &str, password: &str) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let expected = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (tunnels, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (t, r) = (tunnels.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().take(MAX_CONNECTIONS).flatten() {
                let (expected, t, r) = (expected.clone(), t.clone(), r.clone());
                std::thread::spawn(move || tunnel(client, &expected, &t, &r));
            }
        });
        ConnectProxy {
            port,
            tunnels,
            refused,
        }
    }
}

fn tunnel(mut client: TcpStream, expected: &str, tunnels: &AtomicUsize, refused: &AtomicUsize) {
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let target = head
        .first()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split(' ').next());
    let authorized = head.iter().any(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("proxy-authorization: ")
            .is_some_and(|v| v == expected.to_ascii_lowercase())
    });
    let Some(target) = target else { return };
    if !authorized {
        refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    tunnels.fetch_add(1, Ordering::SeqCst);
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut c2, mut s2) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let mut server = server;
    let _ = std::io::copy(&mut server, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

fn proxy_config(live: &Live, port: u16, password: &str) -> String {
    let file = live.w.path("proxy-password");
    std::fs::write(&file, format!("{password}\n")).expect("password file");
    format!(
        "[proxy]\nurl = \"http://127.0.0.1:{port}\"\nusername = \"agent\"\npassword_file = \"{}\"\n[health]\ngrace = \"1s\"\n",
        file.display()
    )
}

#[test]
fn the_agent_updates_through_an_authenticating_proxy() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let proxy = ConnectProxy::start("agent", "s3cret");
    let agent = live.agent("root", &proxy_config(&live, proxy.port, "s3cret"));
    agent.wait_committed("1.0.0");
    assert!(
        proxy.tunnels.load(Ordering::SeqCst) >= 1,
        "the console was reached through the proxy"
    );
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 0);
}

#[test]
fn a_wrong_proxy_password_is_reported_and_nothing_changes() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let proxy = ConnectProxy::start("agent", "s3cret");
    let agent = live.agent("root", &proxy_config(&live, proxy.port, "wrong"));
    wait_for("the refusal in status", || {
        agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("checking"))
    });
    assert!(proxy.refused.load(Ordering::SeqCst) >= 1);
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 0);
    assert!(
        agent.status()["active_version"].is_null(),
        "nothing was installed"
    );
    let error = agent.status()["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.to_lowercase().contains("tunnel") || error.contains("407"),
        "{error}"
    );
}

#[test]
fn a_proxy_set_by_sighup_is_used_at_once_and_the_payload_keeps_running() {
    let live = Live::new();
    let pid_file = live.w.path("payload.pid");
    live.publish_script(
        "1.0.0",
        &format!("echo $$ > {}\nexec sleep 1000", pid_file.display()),
    );
    let proxy = ConnectProxy::start("agent", "s3cret");
    let agent = live.agent("root", "[health]\ngrace = \"1s\"\n");
    agent.wait_committed("1.0.0");
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 0, "no proxy yet");

    // `systemctl reload` after adding [proxy] (what re-running an installer did).
    let password = live.w.path("proxy-password");
    std::fs::write(&password, "s3cret\n").expect("password file");
    let mut config = std::fs::read_to_string(&agent.config).expect("config");
    config.push_str(&format!(
        "[proxy]\nurl = \"http://127.0.0.1:{}\"\nusername = \"agent\"\npassword_file = \"{}\"\n",
        proxy.port,
        password.display()
    ));
    std::fs::write(&agent.config, config).expect("config");
    signal(agent.child.as_ref().expect("agent runs"), libc::SIGHUP);
    agent.wait_until("a check through the proxy", || {
        proxy.tunnels.load(Ordering::SeqCst) >= 1
    });
    let reload = agent.status()["reload"].clone();
    assert_eq!(reload["outcome"], "applied", "{reload}");
    assert_eq!(
        reload["applied"],
        serde_json::json!(["[proxy]"]),
        "{reload}"
    );
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 0);
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid"),
        pid,
        "the payload was restarted"
    );
}
