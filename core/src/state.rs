//! The sandbox lifecycle. Every state change goes through [`SandboxState::check_transition`].

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SandboxState {
    Pending,
    Scheduled,
    Starting,
    Running,
    Paused,
    Snapshotting,
    Stopped,
    Failed,
    Lost,
    Expired,
}

/// A refused state change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sandbox cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: SandboxState,
    pub to: SandboxState,
}

impl SandboxState {
    pub const ALL: [SandboxState; 10] = [
        Self::Pending,
        Self::Scheduled,
        Self::Starting,
        Self::Running,
        Self::Paused,
        Self::Snapshotting,
        Self::Stopped,
        Self::Failed,
        Self::Lost,
        Self::Expired,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed | Self::Lost | Self::Expired)
    }

    /// True while the sandbox occupies resources on a node.
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }

    pub fn can_transition_to(self, to: SandboxState) -> bool {
        use SandboxState::*;
        if self.is_terminal() {
            return false;
        }
        // Any live sandbox can end: destroyed, failed, lost with its node, or expired.
        if to.is_terminal() {
            return true;
        }
        matches!(
            (self, to),
            (Pending, Scheduled)
                | (Scheduled, Starting)
                | (Scheduled, Running)
                | (Starting, Running)
                | (Running, Paused)
                | (Paused, Running)
                | (Running, Snapshotting)
                | (Snapshotting, Running)
        )
    }

    /// The one place that decides whether a state change is allowed.
    pub fn check_transition(self, to: SandboxState) -> Result<SandboxState, InvalidTransition> {
        if self.can_transition_to(to) { Ok(to) } else { Err(InvalidTransition { from: self, to }) }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Scheduled => "SCHEDULED",
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::Snapshotting => "SNAPSHOTTING",
            Self::Stopped => "STOPPED",
            Self::Failed => "FAILED",
            Self::Lost => "LOST",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SandboxState::*;
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in [Stopped, Failed, Lost, Expired] {
            for to in SandboxState::ALL {
                assert!(from.check_transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn lifecycle_paths() {
        assert!(Pending.check_transition(Scheduled).is_ok());
        assert!(Scheduled.check_transition(Running).is_ok());
        assert!(Running.check_transition(Lost).is_ok());
        assert!(Running.check_transition(Pending).is_err());
        assert!(Paused.check_transition(Running).is_ok());
        assert_eq!(SandboxState::parse("running"), Some(Running));
    }
}
