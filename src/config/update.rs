//! `[update]`: how a release is staged (in place or not) and fetched (full or
//! delta).

use serde::Deserialize;

/// Above this share of the full artifact's size, the objects a delta update
/// would fetch are not worth it and the full artifact is downloaded instead:
/// past about 60 % the many small requests and the copy of the running bank
/// cost more than the bytes they save.
pub const DEFAULT_DELTA_MAX_RATIO: f64 = 0.6;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpdate {
    pub(super) allow_in_place: Option<bool>,
    pub(super) delta_max_ratio: Option<f64>,
}

/// `[update]`: how a release is staged and fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    /// Stage over the idle bank (giving up the rollback target first) when the
    /// file system has room only for that, not for a scratch copy beside both
    /// banks. Off by default: such a staging is refused, and `status` says why.
    pub allow_in_place: bool,
    /// `delta_max_ratio`: a delta update is taken only while its objects add up
    /// to at most this share of the full artifact (0 turns delta updates off).
    pub delta_max_ratio: f64,
}

impl Default for UpdateConfig {
    fn default() -> UpdateConfig {
        UpdateConfig {
            allow_in_place: false,
            delta_max_ratio: DEFAULT_DELTA_MAX_RATIO,
        }
    }
}

impl UpdateConfig {
    pub(super) fn parse(raw: RawUpdate) -> Result<UpdateConfig, String> {
        let delta_max_ratio = raw.delta_max_ratio.unwrap_or(DEFAULT_DELTA_MAX_RATIO);
        if !(0.0..=1.0).contains(&delta_max_ratio) {
            return Err(format!(
                "update.delta_max_ratio = {delta_max_ratio}: must be between 0 and 1"
            ));
        }
        Ok(UpdateConfig {
            allow_in_place: raw.allow_in_place.unwrap_or(false),
            delta_max_ratio,
        })
    }
}
