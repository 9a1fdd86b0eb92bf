//! A blocking HTTPS client for tests that trusts the test CA: what an agent,
//! an admin or an attacker would send to the console.

use std::fs;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::support::tls::TestCa;

/// An HTTPS client that trusts the test CA, with a runtime to drive it.
pub struct Http {
    /// Runs the requests.
    rt: Runtime,
    /// The client.
    client: reqwest::Client,
}

/// What a request got back.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header as text ("" if absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON refusal.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("{\"error\": ...}")
            .to_string()
    }
}

impl Http {
    /// A client trusting `ca`. It follows no redirects: tests look at them.
    pub fn new(ca: &TestCa) -> Http {
        Http::build(ca, None)
    }

    /// A client trusting `ca` that presents a client certificate (`identity`:
    /// the PEM key followed by the PEM certificate).
    pub fn with_identity(ca: &TestCa, identity: &[u8]) -> Http {
        Http::build(
            ca,
            Some(reqwest::Identity::from_pem(identity).expect("client identity")),
        )
    }

    fn build(ca: &TestCa, identity: Option<reqwest::Identity>) -> Http {
        let pem = fs::read(&ca.ca_pem).expect("ca.pem");
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA certificate"))
            .redirect(reqwest::redirect::Policy::none())
            // A fresh connection per request: reusing a pooled one that the
            // console closed while idle races (hyper's IncompleteMessage), a
            // flake of this client under load, not a behaviour of the console.
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30));
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        Http {
            rt: Runtime::new().expect("runtime"),
            client: builder.build().expect("client"),
        }
    }

    /// Any method with any headers and body.
    pub fn call(&self, method: Method, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.run(
            self.client.request(method, url).body(body.to_vec()),
            headers,
        )
    }

    /// GET with extra headers.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.run(self.client.get(url), headers)
    }

    /// POST a body.
    pub fn post(&self, url: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.run(self.client.post(url).body(body), &[])
    }

    /// Any method, with an optional bearer token.
    pub fn send(&self, method: Method, url: &str, token: Option<&str>, body: &[u8]) -> Reply {
        let mut request = self.client.request(method, url).body(body.to_vec());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.run(request, &[])
    }

    /// Starts a GET in the background (a request the console should hold).
    pub fn spawn_get(&self, url: &str, headers: &[(&str, &str)]) -> InFlight {
        InFlight(
            self.rt
                .spawn(fetch(with_headers(self.client.get(url), headers))),
        )
    }

    /// Waits for a background request.
    pub fn finish(&self, request: InFlight) -> Reply {
        self.rt.block_on(request.0).expect("background request")
    }

    fn run(&self, request: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> Reply {
        self.rt.block_on(fetch(with_headers(request, headers)))
    }
}

/// A request running in the background.
pub struct InFlight(tokio::task::JoinHandle<Reply>);

impl InFlight {
    /// Whether the answer came already.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

fn with_headers(
    mut request: reqwest::RequestBuilder,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
}

async fn fetch(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}
