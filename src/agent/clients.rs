//! The agent's one HTTPS client, rebuilt whenever what it is made of changes:
//! a reload (trust roots, proxy, connect timeout) or a renewed certificate.
//! Every user — checker, reporter, staging, health probes — takes the latest
//! from a `watch` before each request, so none keeps a stale certificate.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::agent::fetch::ClientSetup;
use crate::identity::Stored;

/// The settings and the identity of the current client, and the client itself.
pub struct Clients {
    /// What the current client was built from.
    parts: Mutex<Parts>,
    /// The current client; every request takes the latest.
    current: watch::Sender<reqwest::Client>,
}

/// What a client is built from.
struct Parts {
    /// Trust roots, proxy, connect timeout.
    setup: ClientSetup,
    /// The agent certificate, once enrolled.
    identity: Option<Stored>,
}

impl Clients {
    /// Builds the first client.
    pub fn new(setup: ClientSetup, identity: Option<Stored>) -> anyhow::Result<Clients> {
        let client = setup.client(identity.as_ref())?;
        Ok(Clients {
            parts: Mutex::new(Parts { setup, identity }),
            current: watch::channel(client).0,
        })
    }

    /// Follows the current client.
    pub fn subscribe(&self) -> watch::Receiver<reqwest::Client> {
        self.current.subscribe()
    }

    /// A builder with the current settings and no identity (for renewal).
    pub fn builder(&self) -> reqwest::ClientBuilder {
        self.lock().setup.builder()
    }

    /// Switches to new settings (a reload), keeping the identity. The client is
    /// built first: on error nothing changes.
    pub fn set_setup(&self, setup: ClientSetup) -> anyhow::Result<()> {
        let mut parts = self.lock();
        let client = setup.client(parts.identity.as_ref())?;
        parts.setup = setup;
        self.current.send_replace(client);
        Ok(())
    }

    /// Switches to a renewed certificate. On error nothing changes.
    pub fn set_identity(&self, identity: Stored) -> anyhow::Result<()> {
        let mut parts = self.lock();
        let client = parts.setup.client(Some(&identity))?;
        parts.identity = Some(identity);
        self.current.send_replace(client);
        Ok(())
    }

    /// A client from `setup` with the current identity, without switching to
    /// it: what a reload checks before it changes anything.
    pub fn try_with(&self, setup: &ClientSetup) -> anyhow::Result<()> {
        let parts = self.lock();
        setup.client(parts.identity.as_ref()).map(drop)
    }

    /// The parts. A panic elsewhere while holding them cannot leave them
    /// half-changed (each change is one assignment after the fallible build).
    fn lock(&self) -> MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
