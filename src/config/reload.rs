//! A reload (SIGHUP, SPEC §12): what changed between two configs, and when each
//! change applies.

use super::AgentConfig;

/// What a reload (SIGHUP, SPEC §12) changes, grouped by when it takes effect.
/// Each entry is the config key as an operator writes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Applied at once: the console and how it is reached (proxy, TLS roots,
    /// timeouts), trusted keys, poll and delay settings, logging.
    pub now: Vec<&'static str>,
    /// `[health]`: judges the next trial (a trial under way keeps its rules).
    pub next_trial: Vec<&'static str>,
    /// `[payload]` and `[[listen]]`: used when the payload next starts (the
    /// next swap, or `bankswap restart-payload`); the running generation keeps
    /// its environment, user and sockets until then.
    pub next_swap: Vec<&'static str>,
    /// Kept until the agent restarts: the root and the channel are its
    /// identity, and the token and self-update settings are read at start.
    pub restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// True when the new config changes nothing.
    pub fn is_empty(&self) -> bool {
        self.now.is_empty()
            && self.next_trial.is_empty()
            && self.next_swap.is_empty()
            && self.restart.is_empty()
    }
}

impl AgentConfig {
    /// What reloading from `self` to `new` changes, and when each change applies.
    pub fn reload_plan(&self, new: &AgentConfig) -> ReloadPlan {
        fn note(list: &mut Vec<&'static str>, changed: bool, key: &'static str) {
            if changed {
                list.push(key);
            }
        }
        let mut plan = ReloadPlan::default();
        let now = &mut plan.now;
        note(now, self.console != new.console, "console");
        note(now, self.trusted_keys != new.trusted_keys, "trusted_keys");
        note(
            now,
            self.poll_interval != new.poll_interval,
            "poll_interval",
        );
        note(now, self.max_delay != new.max_delay, "max_delay");
        note(now, self.ca_certs != new.ca_certs, "[tls] ca_certs");
        note(now, self.proxy != new.proxy, "[proxy]");
        note(now, self.log != new.log, "[log]");
        note(now, self.timeouts != new.timeouts, "[timeouts]");
        note(now, self.update != new.update, "[update]");
        note(&mut plan.next_trial, self.health != new.health, "[health]");
        let next_swap = &mut plan.next_swap;
        note(next_swap, self.payload != new.payload, "[payload]");
        note(next_swap, self.listen != new.listen, "[[listen]]");
        let restart = &mut plan.restart;
        note(restart, self.root != new.root, "root");
        note(restart, self.channel != new.channel, "channel");
        note(
            restart,
            self.self_update != new.self_update,
            "[self_update]",
        );
        let token = &self.enrollment_token_file;
        note(
            restart,
            *token != new.enrollment_token_file,
            "enrollment_token_file",
        );
        plan
    }

    /// The config an agent runs after reloading to `new`: `new`, except what
    /// waits for a restart of the agent (see [`ReloadPlan::restart`]).
    pub fn reloaded(&self, new: AgentConfig) -> AgentConfig {
        AgentConfig {
            root: self.root.clone(),
            channel: self.channel.clone(),
            enrollment_token_file: self.enrollment_token_file.clone(),
            self_update: self.self_update.clone(),
            ..new
        }
    }
}
