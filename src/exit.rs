//! How a run ended, as the process exit code: its own module so that every layer can say it
//! without importing the command line.

/// How a run ended, as the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every image mirrored or already up to date.
    Success = 0,
    /// At least one image failed; all the others were still done.
    SomeFailed = 1,
    /// Bad config or usage: nothing was attempted.
    BadConfig = 2,
}
