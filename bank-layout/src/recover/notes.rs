//! What recovery at open says it did: [`Recovery`], one variant per repair, each
//! displayed as one line (the agent logs them and `status` shows them).

use std::fmt;

use crate::{BankId, STATE_FILE};

/// One repair made by [`Root::open`](crate::Root::open). `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// A bank folder was missing (deleted by hand) and was re-created empty.
    BankRecreated {
        /// The bank.
        bank: BankId,
    },
    /// A bank folder held files but no valid record (an interrupted stage): emptied.
    HalfStagedWiped {
        /// The bank.
        bank: BankId,
    },
    /// `state.json` was missing and was rebuilt from the bank records.
    StateRebuilt {
        /// The bank chosen as active (the record with the highest sequence).
        active: BankId,
    },
    /// The active bank held no release; the other bank, which does, is active now.
    FellBack {
        /// The bank that was active.
        from: BankId,
        /// The bank active now.
        to: BankId,
        /// What was wrong with `from`.
        reason: String,
    },
    /// The active bank holds no release, and the other bank neither: nothing can run.
    ActiveEmpty {
        /// The active bank.
        bank: BankId,
        /// What is wrong with it.
        reason: String,
    },
    /// `state.json` listed another version for a bank than its record; corrected.
    VersionCorrected {
        /// The bank.
        bank: BankId,
        /// What `state.json` listed.
        listed: Option<String>,
        /// What the bank's record says.
        actual: Option<String>,
    },
    /// Temp files of an interrupted [`write_atomic`](crate::write_atomic) were removed.
    TempFilesRemoved {
        /// How many.
        count: usize,
    },
    /// The scratch folder of an interrupted staging was removed; both banks are as
    /// they were before it.
    ScratchRemoved,
    /// A staging was interrupted between its two renames: the bank folder was missing
    /// and its retired copy was renamed back.
    BankRestored {
        /// The bank.
        bank: BankId,
    },
    /// The retired copy of a bank replaced by a staged release was removed.
    RetiredRemoved {
        /// The bank.
        bank: BankId,
    },
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "no release".to_owned());
        match self {
            Recovery::BankRecreated { bank } => write!(f, "re-created missing bank folder {bank}"),
            Recovery::HalfStagedWiped { bank } => write!(f, "wiped half-staged {bank}"),
            Recovery::StateRebuilt { active } => {
                write!(
                    f,
                    "rebuilt missing {STATE_FILE} from the bank records; {active} is active"
                )
            }
            Recovery::FellBack { from, to, reason } => {
                write!(f, "fell back from {from} to {to}: {reason}")
            }
            Recovery::ActiveEmpty { bank, reason } => write!(
                f,
                "active {bank} holds no release and {} neither ({reason}): nothing to run until one is installed",
                bank.other()
            ),
            Recovery::VersionCorrected {
                bank,
                listed,
                actual,
            } => write!(
                f,
                "{STATE_FILE} listed {} in {bank}, which holds {}; corrected",
                or_none(listed),
                or_none(actual)
            ),
            Recovery::TempFilesRemoved { count } => {
                write!(
                    f,
                    "removed {count} temporary file(s) left by an interrupted write"
                )
            }
            Recovery::ScratchRemoved => write!(
                f,
                "removed the scratch folder of an interrupted staging; both banks are as they were"
            ),
            Recovery::BankRestored { bank } => write!(
                f,
                "put back {bank} from its retired copy (a staging was interrupted while replacing it)"
            ),
            Recovery::RetiredRemoved { bank } => {
                write!(f, "removed the retired copy of {bank} left by a staging")
            }
        }
    }
}
