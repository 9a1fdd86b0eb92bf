//! The checks of `bankswap doctor` that go over the network: DNS, TCP, TLS
//! (or the proxy), the signed manifest, the clock against the console's
//! `Date`, and the syslog target.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime};

use bank_layout::{Root, State};
use reqwest::header::DATE;
use rustls::CertificateError;

use super::{CHECK_TIMEOUT, MAX_CLOCK_SKEW, Outcome, Problem, Report, fail};
use crate::agent::fetch::{self, Checked};
use crate::config::AgentConfig;
use crate::release::verify_against;
use crate::setup::ReleaseSetup;

/// DNS, TCP, TLS (or the proxy), the signed manifest and the clock.
pub(super) fn network_checks(config: &AgentConfig, report: &mut Report) {
    let Some(console) = config.console.as_deref() else {
        report.line(
            "console",
            fail("no `console` in the config", "set console = \"https://…\""),
        );
        return;
    };
    let Some((host, port)) = host_port(console) else {
        report.line(
            "console",
            fail(
                format!("{console} has no host"),
                "console = \"https://host[:port]\"",
            ),
        );
        return;
    };
    let via_proxy = config.proxy.as_ref().map(|p| p.url.clone());
    if let Some(proxy) = &via_proxy {
        let Some((proxy_host, proxy_port)) = host_port(proxy) else {
            report.line(
                "proxy",
                fail(format!("{proxy} has no host"), "fix [proxy] url"),
            );
            return;
        };
        let addr = match resolve(&proxy_host, proxy_port) {
            Ok(addr) => addr,
            Err(problem) => {
                report.line("proxy dns", Err(problem));
                return;
            }
        };
        if !report.line("proxy tcp", connect(addr, "the proxy")) {
            return;
        }
        report.skip("dns", "the proxy resolves the console");
        report.skip("tcp", "the proxy connects to the console");
    } else {
        let addr = match resolve(&host, port) {
            Ok(addr) => {
                report.line("dns", Ok(format!("{host} is {}", addr.ip())));
                addr
            }
            Err(problem) => {
                report.line("dns", Err(problem));
                return;
            }
        };
        if !report.line("tcp", connect(addr, "the console")) {
            return;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            report.line("tls", fail(format!("no async runtime: {err}"), "retry"));
            return;
        }
    };
    runtime.block_on(async {
        let http = match fetch::client(config) {
            Ok(http) => http,
            Err(err) => {
                report.line(
                    "tls",
                    fail(format!("{err:#}"), "fix [tls] ca_certs or [proxy]"),
                );
                return;
            }
        };
        let url = fetch::url(
            console,
            &format!("channels/{}/release.json", config.channel),
        );
        let response = tokio::time::timeout(CHECK_TIMEOUT, http.get(&url).send()).await;
        let name = if via_proxy.is_some() {
            "proxy + tls"
        } else {
            "tls"
        };
        let response = match response {
            Err(_) => {
                report.line(
                    name,
                    fail(
                        format!("no answer within {CHECK_TIMEOUT:?}"),
                        "check the console",
                    ),
                );
                return;
            }
            Ok(Err(err)) => {
                report.line(name, Err(explain_tls(&err, &host)));
                return;
            }
            Ok(Ok(response)) => response,
        };
        report.line(
            name,
            Ok(format!(
                "{host} presented a trusted certificate for its name"
            )),
        );
        report.line("clock", check_clock(response.headers().get(DATE)));
        report.line("manifest", check_manifest(&http, config, console).await);
    });
}

/// The host and port of an `http(s)://` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.trim_matches(['[', ']']).to_string();
    Some((host, parsed.port_or_known_default()?))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, Problem> {
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| Problem {
            what: format!("{host} has no address"),
            fix: "check the name and /etc/resolv.conf".into(),
        }),
        Err(err) => Err(Problem {
            what: format!("cannot resolve {host}: {err}"),
            fix: "check the name and /etc/resolv.conf".into(),
        }),
    }
}

fn connect(addr: SocketAddr, what: &str) -> Outcome {
    match TcpStream::connect_timeout(&addr, CHECK_TIMEOUT) {
        Ok(_) => Ok(format!("{addr} accepts connections")),
        Err(err) => fail(
            format!("cannot connect to {what} at {addr}: {err}"),
            "check that it runs and that no firewall blocks the port",
        ),
    }
}

/// Names the exact TLS problem from a failed request's causes: the typed rustls
/// error where the chain exposes it, else rustls' own wording (an `io::Error`
/// in the chain hides its inner error from `source()`).
fn explain_tls(err: &reqwest::Error, host: &str) -> Problem {
    let text = fetch::describe(err);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut typed = None;
    while let Some(cause) = source {
        let rustls_error = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(cert)) = rustls_error {
            typed = Some(match cert {
                CertificateError::UnknownIssuer => TlsProblem::UnknownCa,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsProblem::WrongName,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsProblem::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsProblem::NotYetValid
                }
                _ => TlsProblem::Other,
            });
            break;
        }
        source = cause.source();
    }
    let problem = typed.unwrap_or_else(|| TlsProblem::from_text(&text));
    let (what, fix) = match problem {
        TlsProblem::UnknownCa => (
            format!("the certificate of {host} is signed by an unknown CA"),
            "add the CA certificate (PEM) to [tls] ca_certs",
        ),
        TlsProblem::WrongName => (
            format!("the certificate is not valid for the host name {host}"),
            "use the name the certificate was made for in `console`, or reissue it (console cert --name)",
        ),
        TlsProblem::Expired => (
            format!("the certificate of {host} has expired"),
            "renew the console's certificate (console cert --out DIR renews it with the kept CA)",
        ),
        TlsProblem::NotYetValid => (
            format!("the certificate of {host} is not valid yet"),
            "check this machine's clock",
        ),
        TlsProblem::ProxyAuth => (
            format!("the proxy refused the credentials: {text}"),
            "check [proxy] username and password_file",
        ),
        TlsProblem::Other => (text, "check the console URL, [tls] ca_certs and [proxy]"),
    };
    Problem {
        what,
        fix: fix.into(),
    }
}

/// What a failed HTTPS request ran into.
enum TlsProblem {
    /// The chain ends at a CA nobody trusts here.
    UnknownCa,
    /// The certificate names other hosts.
    WrongName,
    /// Past its notAfter.
    Expired,
    /// Before its notBefore (usually this clock).
    NotYetValid,
    /// The proxy answered 407.
    ProxyAuth,
    /// Anything else, described as it came.
    Other,
}

impl TlsProblem {
    /// From rustls' and reqwest's messages.
    fn from_text(text: &str) -> TlsProblem {
        let lower = text.to_lowercase();
        if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
            TlsProblem::UnknownCa
        } else if lower.contains("not valid for name") || lower.contains("notvalidforname") {
            TlsProblem::WrongName
        } else if lower.contains("certificate expired")
            || lower.contains("invalid peer certificate: expired")
        {
            TlsProblem::Expired
        } else if lower.contains("not valid yet") || lower.contains("notvalidyet") {
            TlsProblem::NotYetValid
        } else if lower.contains("407") || lower.contains("proxy auth") {
            TlsProblem::ProxyAuth
        } else {
            TlsProblem::Other
        }
    }
}

/// The clock against the console's `Date` header.
fn check_clock(date: Option<&reqwest::header::HeaderValue>) -> Outcome {
    let Some(date) = date.and_then(|d| d.to_str().ok()) else {
        return Ok("the console sent no Date; not compared".into());
    };
    let Some(console_time) = httpdate::parse_http_date(date).ok() else {
        return Ok(format!(
            "cannot read the console's Date `{date}`; not compared"
        ));
    };
    let now = SystemTime::now();
    let (skew, ahead) = match now.duration_since(console_time) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    let skew = Duration::from_secs(skew.as_secs());
    if skew > MAX_CLOCK_SKEW {
        let side = if ahead { "ahead of" } else { "behind" };
        return fail(
            format!(
                "this clock is {} {side} the console's",
                humantime::format_duration(skew)
            ),
            "enable time sync (timedatectl set-ntp true)",
        );
    }
    Ok(format!(
        "within {} of the console",
        humantime::format_duration(skew)
    ))
}

/// The channel's manifest, fetched and verified as the agent would (not installed).
async fn check_manifest(http: &reqwest::Client, config: &AgentConfig, console: &str) -> Outcome {
    let checked = fetch::check(
        http,
        console,
        &config.channel,
        None,
        None,
        Duration::ZERO,
        &config.timeouts,
    )
    .await;
    let (manifest, signature) = match checked {
        Ok(Checked::Release {
            manifest,
            signature,
            ..
        }) => (manifest, signature),
        Ok(Checked::Unchanged) => return Ok("unchanged".into()),
        Err(err) => {
            return fail(
                format!("{err:#}"),
                format!("publish a release on channel {}", config.channel),
            );
        }
    };
    // The root's state decides downgrades and replays; an uninitialised root knows nothing yet.
    let state = Root::read_state(&config.root).unwrap_or_else(|_| State::default());
    let setup = ReleaseSetup {
        root: config.root.clone(),
        channel: config.channel.clone(),
        trusted_keys: config.trusted_keys.clone(),
        allow_in_place: config.update.allow_in_place,
    };
    match verify_against(&state, &setup, &manifest, &signature, SystemTime::now()) {
        Ok(release) => Ok(format!(
            "{} sequence {} on {} verifies against the trusted keys",
            release.manifest.version, release.manifest.sequence, config.channel
        )),
        Err(err) => fail(
            format!("{err}"),
            "trust the key that signs this channel (trusted_keys), or re-publish the release",
        ),
    }
}

/// The syslog target resolves and, for TCP, accepts a connection.
pub(super) fn check_syslog(url: Option<&str>) -> Outcome {
    let Some(url) = url else {
        return Ok("not configured (stderr / journald only)".into());
    };
    let fix = "[log] syslog = \"udp://host:port\" or \"tcp://host:port\"";
    let Some((scheme, rest)) = url.split_once("://") else {
        return fail(format!("{url}: no scheme"), fix);
    };
    let addr = match rest.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) => return fail(format!("{url}: no address"), fix),
        Err(err) => return fail(format!("{url}: {err}"), fix),
    };
    match scheme {
        "tcp" => connect(addr, "the syslog server").map(|_| format!("{url} accepts connections")),
        "udp" => Ok(format!(
            "{url} resolves to {addr} (UDP is not acknowledged)"
        )),
        other => fail(format!("{url}: unknown scheme {other}"), fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_far_from_the_consoles_date_fails_with_the_fix() {
        let date = |t: SystemTime| {
            reqwest::header::HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap()
        };
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let problem = |outcome: Outcome| match outcome {
            Err(p) => format!("{}; {}", p.what, p.fix),
            Ok(line) => panic!("passed: {line}"),
        };
        let behind = problem(check_clock(Some(&date(now + hour))));
        assert!(behind.contains("behind the console"), "{behind}");
        assert!(behind.contains("timedatectl"), "{behind}");
        let ahead = problem(check_clock(Some(&date(now - hour))));
        assert!(ahead.contains("ahead of the console"), "{ahead}");
        assert!(check_clock(Some(&date(now))).is_ok());
        assert!(check_clock(None).is_ok(), "no Date: not compared");
        let bad = reqwest::header::HeaderValue::from_static("yesterday");
        assert!(check_clock(Some(&bad)).unwrap().contains("not compared"));
    }

    #[test]
    fn host_and_port_of_urls() {
        assert_eq!(
            host_port("https://127.0.0.1:8443/x"),
            Some(("127.0.0.1".into(), 8443))
        );
        assert_eq!(
            host_port("https://console.example.com"),
            Some(("console.example.com".into(), 443))
        );
    }
}
