//! The agent reaches its console through an HTTP proxy with basic auth
//! (`[proxy]`): a real CONNECT proxy on loopback that refuses wrong credentials.

use std::sync::atomic::Ordering;

use crate::support::live::{Live, signal, wait_for};
use crate::support::proxy::ConnectProxy;

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
