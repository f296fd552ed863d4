//! Raft consensus core (in progress).
