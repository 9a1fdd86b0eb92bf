//! Admin access end to end (SPEC §10 "Admins log in", issue 11): the fleet
//! page and `/v1/fleet` need an admin token (bearer or a login session),
//! forms need the session's CSRF token, and wrong logins are rate limited.

use std::fs;

use reqwest::Method;

use crate::support::console::AdminConsole;
use crate::support::https::{Http, Reply};
use crate::support::{assert_fails_with, run, run_ok};

/// The `--admin-token-file` token.
const TOKEN: &str = "the-admin-token-of-the-tests-42";

/// The console of these stories (shared with tests/rollout.rs).
struct Admin(AdminConsole);

impl std::ops::Deref for Admin {
    type Target = AdminConsole;

    fn deref(&self) -> &AdminConsole {
        &self.0
    }
}

impl Admin {
    fn start() -> Admin {
        Admin(AdminConsole::start(TOKEN))
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.http.get(&self.console.url_of(path), headers)
    }

    fn form(&self, path: &str, cookie: Option<&str>, body: &str) -> Reply {
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        self.http.call(
            Method::POST,
            &self.console.url_of(path),
            &headers,
            body.as_bytes(),
        )
    }

    /// Logs in with `token`; the `name=value` of the session cookie.
    fn login(&self, token: &str) -> String {
        let reply = self.form("/login", None, &format!("token={token}"));
        assert_eq!(reply.status, 303, "{}", self.console.stderr());
        assert_eq!(reply.header("location"), "/");
        let cookie = reply.header("set-cookie").to_string();
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
        }
        cookie.split(';').next().expect("name=value").to_string()
    }
}

fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a CSRF field") + marker.len();
    page[start..]
        .split('"')
        .next()
        .expect("CSRF value")
        .to_string()
}

#[test]
fn the_fleet_needs_an_admin_token_or_a_session() {
    let admin = Admin::start();
    let anonymous = Http::new(&admin.ca);
    assert_eq!(
        anonymous
            .post(
                &admin.console.url_of("/v1/agents/agent-1/report"),
                r#"{"version":"1.0.0"}"#
            )
            .status,
        204
    );

    // Without a session: the login page, and 401 for the API.
    let page = admin.get("/", &[]);
    assert_eq!(page.status, 401);
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("action=\"/login\"") && !html.contains("agent-1"),
        "{html}"
    );
    let fleet = admin.get("/v1/fleet", &[]);
    assert_eq!(fleet.status, 401);
    assert_eq!(
        admin
            .get(
                "/v1/fleet",
                &[("authorization", "Bearer wrong-token-0000000000")]
            )
            .status,
        401
    );

    // With the token: the fleet.
    let bearer = format!("Bearer {TOKEN}");
    let fleet = admin.get("/v1/fleet", &[("authorization", &bearer)]);
    assert_eq!(fleet.status, 200);
    assert_eq!(fleet.json()[0]["agent_id"], "agent-1");
    let cli = run_ok([
        "console",
        "fleet",
        "--console",
        &admin.console.url,
        "--ca-cert",
        &admin.ca.ca_pem.display().to_string(),
        "--token-file",
        &admin.token_file.display().to_string(),
    ]);
    assert!(cli.stdout.contains("agent-1"), "{}", cli.stdout);
    let refused = run([
        "console",
        "fleet",
        "--console",
        &admin.console.url,
        "--ca-cert",
        &admin.ca.ca_pem.display().to_string(),
    ]);
    assert_fails_with(&refused, "admin token");

    // A browser session: the page, with a CSRF token in its forms.
    let cookie = admin.login(TOKEN);
    let page = admin.get("/", &[("cookie", &cookie)]);
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains("agent-1"), "{html}");
    let csrf = csrf_of(&html);
    assert_eq!(admin.get("/v1/fleet", &[("cookie", &cookie)]).status, 200);

    // A forged CSRF token: 403, and the session goes on.
    assert_eq!(
        admin.form("/logout", Some(&cookie), "csrf=forged").status,
        403
    );
    assert_eq!(
        admin
            .form("/agents/agent-1/revoke", Some(&cookie), "csrf=forged")
            .status,
        403
    );
    assert_eq!(admin.form("/logout", Some(&cookie), "").status, 403);
    assert_eq!(admin.get("/", &[("cookie", &cookie)]).status, 200);
    // The real one logs out.
    let out = admin.form("/logout", Some(&cookie), &format!("csrf={csrf}"));
    assert_eq!(out.status, 303);
    assert_eq!(admin.get("/", &[("cookie", &cookie)]).status, 401);
    assert_eq!(
        admin
            .get("/", &[("cookie", "bankswap_session=forged")])
            .status,
        401
    );
}

#[test]
fn named_admin_tokens_work_until_revoked() {
    let admin = Admin::start();
    let data = admin.data.display().to_string();
    let alice = run_ok(["console", "admin-token", "create", "alice", "--data", &data])
        .stdout
        .trim()
        .to_string();
    let bearer = format!("Bearer {alice}");
    assert_eq!(
        admin.get("/v1/fleet", &[("authorization", &bearer)]).status,
        200
    );
    let taken = run(["console", "admin-token", "create", "alice", "--data", &data]);
    assert_eq!(taken.code, 2, "{taken:?}");
    assert!(
        taken
            .stderr
            .contains("error: an admin token named alice exists")
    );
    run_ok(["console", "admin-token", "revoke", "alice", "--data", &data]);
    assert_eq!(
        admin.get("/v1/fleet", &[("authorization", &bearer)]).status,
        401
    );
    // The file's token is unaffected.
    let file = format!("Bearer {TOKEN}");
    assert_eq!(
        admin.get("/v1/fleet", &[("authorization", &file)]).status,
        200
    );
    assert!(
        !fs::read_to_string(admin.data.join("fleet.sqlite"))
            .unwrap_or_default()
            .contains(&alice),
        "tokens are stored hashed"
    );
    let _ = &admin.world;
}

#[test]
fn twenty_wrong_logins_are_rate_limited_and_logged() {
    let admin = Admin::start();
    let statuses: Vec<u16> = (0..20)
        .map(|i| {
            admin
                .form("/login", None, &format!("token=wrong-guess-{i:04}"))
                .status
        })
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(statuses[0], 401);
    assert_eq!(statuses[19], 429, "{statuses:?}");
    // Even the right token waits now, from this address.
    assert_eq!(
        admin.form("/login", None, &format!("token={TOKEN}")).status,
        429
    );
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        admin.get("/v1/fleet", &[("authorization", &bearer)]).status,
        429
    );
    let log = admin.console.stderr();
    assert!(
        log.contains("failed admin authentication") && log.contains("127.0.0.1"),
        "{log}"
    );
}
