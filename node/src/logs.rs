//! Container log files (CRI format) with rotation, and reading them back for `kubectl logs`.
