//! Revisions: the store-wide logical clock of MVCC.
//!
//! A `Revision` is the main revision clients see (`mod_revision`,
//! `create_revision`, header revisions). Every write request that changes
//! something takes the next main revision; the changes inside it are numbered
//! by `sub`, so one change is identified by a `KeyRevision` (main, sub).
//!
//! Storage keys are `KeyRevision`s encoded big-endian, so byte order equals
//! revision order and a forward scan of the `kv` family replays history.
//! Tombstones carry one extra marker byte after the 17-byte revision.

/// A main revision of the store. Never negative for a real revision; etcd
/// starts a fresh store at revision 1 (the first write gets revision 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub i64);

impl Revision {
    /// The revision of a fresh store: etcd's `currentRev` starts at 1.
    pub const INITIAL: Revision = Revision(1);

    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The identity of one change: the write request's main revision and the
/// change's position inside that request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRevision {
    pub main: Revision,
    /// Position of the change within its write request, from 0.
    pub sub: i64,
}

/// Length of an encoded `KeyRevision`: 8 bytes main, a separator, 8 bytes sub.
pub const REVISION_BYTES: usize = 17;
/// Marker appended to the storage key of a deletion.
pub const TOMBSTONE_MARK: u8 = b't';

impl KeyRevision {
    pub fn new(main: Revision, sub: i64) -> Self {
        KeyRevision { main, sub }
    }

    /// The storage key of this change. Big-endian so byte order is revision
    /// order (revisions are never negative, so the sign bit is always 0).
    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(REVISION_BYTES + 1);
        out.extend_from_slice(&self.main.0.to_be_bytes());
        out.push(b'_');
        out.extend_from_slice(&self.sub.to_be_bytes());
        if tombstone {
            out.push(TOMBSTONE_MARK);
        }
        out
    }

    /// Decodes a storage key: the revision and whether it marks a tombstone.
    pub fn from_key(key: &[u8]) -> Option<(KeyRevision, bool)> {
        let tombstone = match key.len() {
            REVISION_BYTES => false,
            n if n == REVISION_BYTES + 1 && key[REVISION_BYTES] == TOMBSTONE_MARK => true,
            _ => return None,
        };
        if key[8] != b'_' {
            return None;
        }
        let main = i64::from_be_bytes(key[0..8].try_into().ok()?);
        let sub = i64::from_be_bytes(key[9..17].try_into().ok()?);
        Some((KeyRevision::new(Revision(main), sub), tombstone))
    }
}

/// The smallest storage key of main revision `main` (sub 0, no marker): scans
/// of `[start_key(a), start_key(b))` cover main revisions `a..b`.
pub fn start_key(main: Revision) -> Vec<u8> {
    KeyRevision::new(main, 0).to_key(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_orders_like_revisions() {
        let revs = [
            (KeyRevision::new(Revision(1), 0), false),
            (KeyRevision::new(Revision(1), 1), true),
            (KeyRevision::new(Revision(2), 0), false),
            (KeyRevision::new(Revision(256), 3), true),
            (KeyRevision::new(Revision(i64::MAX), 0), false),
        ];
        for w in revs.windows(2) {
            assert!(w[0].0.to_key(w[0].1) < w[1].0.to_key(w[1].1));
        }
        for (r, t) in revs {
            assert_eq!(KeyRevision::from_key(&r.to_key(t)), Some((r, t)));
        }
        assert!(KeyRevision::from_key(b"short").is_none());
    }

    #[test]
    fn tombstone_key_sorts_after_its_put_key_and_before_the_next_sub() {
        let a = KeyRevision::new(Revision(5), 0);
        let b = KeyRevision::new(Revision(5), 1);
        assert!(a.to_key(false) < a.to_key(true));
        assert!(a.to_key(true) < b.to_key(false));
        assert!(start_key(Revision(6)) > b.to_key(true));
    }
}
