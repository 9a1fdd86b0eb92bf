//! Which build this process runs: a slot of the root holding the same file as
//! `/proc/self/exe`, or the installed binary.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bank_layout::{AGENT_BINARY, AGENT_DIR, AgentSlots, SlotId};

use super::BUILD_VERSION;

/// Which build this process runs: its release version and slot (`None` = the
/// installed binary, whose version is [`BUILD_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Release version.
    pub version: String,
    /// The slot it runs from.
    pub slot: Option<SlotId>,
}

impl Identity {
    /// The build of `/proc/self/exe`: a slot of `root_dir` holding the same file
    /// (device and inode) gives its record's version; anything else is the
    /// installed binary. Reads only, no lock.
    pub fn of_self(root_dir: &Path) -> Identity {
        let installed = Identity {
            version: BUILD_VERSION.to_owned(),
            slot: None,
        };
        let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
            return installed;
        };
        for slot in SlotId::ALL {
            let binary = root_dir
                .join(AGENT_DIR)
                .join(slot.dir_name())
                .join(AGENT_BINARY);
            let same = std::fs::metadata(&binary)
                .is_ok_and(|m| m.dev() == exe.dev() && m.ino() == exe.ino());
            if same && let Ok(Some(build)) = AgentSlots::read_record(root_dir, slot) {
                return Identity {
                    version: build.version,
                    slot: Some(slot),
                };
            }
        }
        installed
    }
}
