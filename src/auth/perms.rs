//! A user's merged key permissions: the union of its roles' ranges, one set
//! for reading and one for writing, as sorted disjoint intervals, and the
//! coverage test etcd's interval trees make (`range_perm_cache.go`).
//!
//! A granted permission `(key, range_end)` is the interval `[key, key\0)`
//! (one key) when `range_end` is empty, `[key, +∞)` when it is `\0`, else
//! `[key, range_end)`. A request on one key is allowed when some interval
//! holds the key; a request on a range (`\0` meaning open-ended) when the
//! union covers all of it (an empty or inverted range: when its key is held,
//! `Intervals::covers`).
//! Tests: `src/auth/tests.rs` (against a brute-force model).

use cairn_proto::authpb::{permission::Type as PermType, Role};

use super::Access;

/// The end of an interval: a key (exclusive) or beyond every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    Key(Vec<u8>),
    Infinity,
}

/// Sorted, disjoint, non-adjacent half-open intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(Vec<u8>, End)>);

impl Intervals {
    fn from_unsorted(mut v: Vec<(Vec<u8>, End)>) -> Intervals {
        v.retain(|(start, end)| match end {
            End::Key(e) => start < e,
            End::Infinity => true,
        });
        v.sort();
        let mut out: Vec<(Vec<u8>, End)> = Vec::with_capacity(v.len());
        for (start, end) in v {
            if let Some((_, last_end)) = out.last_mut() {
                let touches = match &*last_end {
                    End::Infinity => true,
                    End::Key(e) => start <= *e,
                };
                if touches {
                    if end > *last_end {
                        *last_end = end;
                    }
                    continue;
                }
            }
            out.push((start, end));
        }
        Intervals(out)
    }

    /// The interval starting at or before `key`, if any.
    fn containing(&self, key: &[u8]) -> Option<&(Vec<u8>, End)> {
        let i = self.0.partition_point(|(s, _)| s.as_slice() <= key);
        i.checked_sub(1).map(|i| &self.0[i])
    }

    /// Whether `key` lies in one of the intervals.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.containing(key).is_some_and(|(_, end)| match end {
            End::Infinity => true,
            End::Key(e) => key < e.as_slice(),
        })
    }

    /// Whether the intervals cover all of `[start, end)`. An empty or
    /// inverted range (`end` ≤ `start`) counts as covered when `start` is
    /// held: etcd's interval tree visits only the grants holding `start`
    /// for it, and any one of them passes its test.
    pub fn covers(&self, start: &[u8], end: &End) -> bool {
        match end {
            End::Key(e) if e.as_slice() <= start => self.holds(start),
            _ => self.containing(start).is_some_and(|(_, e)| e >= end),
        }
    }
}

/// The interval a permission or request names (module docs).
pub fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, End) {
    let end = if range_end.is_empty() {
        let mut next = key.to_vec();
        next.push(0);
        End::Key(next)
    } else if range_end == [0] {
        End::Infinity
    } else {
        End::Key(range_end.to_vec())
    };
    (key.to_vec(), end)
}

/// A user's merged permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPerms {
    read: Intervals,
    write: Intervals,
}

impl UserPerms {
    /// The union of `roles`' permissions.
    pub fn merge<'a>(roles: impl Iterator<Item = &'a Role>) -> UserPerms {
        let (mut read, mut write) = (Vec::new(), Vec::new());
        for role in roles {
            for p in &role.key_permission {
                let ivl = interval(&p.key, &p.range_end);
                match PermType::try_from(p.perm_type) {
                    Ok(PermType::Read) => read.push(ivl),
                    Ok(PermType::Write) => write.push(ivl),
                    Ok(PermType::Readwrite) => {
                        read.push(ivl.clone());
                        write.push(ivl);
                    }
                    // An unknown kind grants nothing.
                    Err(_) => {}
                }
            }
        }
        UserPerms {
            read: Intervals::from_unsorted(read),
            write: Intervals::from_unsorted(write),
        }
    }

    /// Whether a request on `(key, range_end)` is allowed this `access`.
    pub fn allows(&self, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            set.holds(key)
        } else {
            let (start, end) = interval(key, range_end);
            set.covers(&start, &end)
        }
    }
}
