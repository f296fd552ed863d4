//! The auth checker: a model of etcd's auth rules replays the committed log
//! (every client write and auth change, in index order, as the raft oracle
//! recorded their first apply) and holds each apply to it:
//! - no operation took effect that the model refuses at the auth state in
//!   force when it was applied (no user, an auth revision older than the
//!   state's, a user without the permission, a non-root user changing auth);
//!   its refusal must be the model's, word for word;
//! - no operation the model permits was refused for lack of permission;
//! - every auth change succeeds or fails as the model says (so the model's
//!   revision follows the cluster's), and every login is granted exactly
//!   when the model would grant it.
//! The model is written apart from `cairn::auth` (a permission check by a
//! sweep over the granted ranges, not merged intervals), so a bug shared by
//! both is unlikely. Members agreeing on every decision is the raft oracle's
//! check (a refusal is part of an entry's effects).
//! Tests: the unit tests below; the `auth3` simulation scenario.

use std::collections::BTreeMap;

use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::cairnpb::{internal_request::Request, Caller, InternalRequest};
use cairn_proto::etcdserverpb::{request_op, TxnRequest};

const ROOT: &str = "root";

const USER_EMPTY: &str = "etcdserver: user name is empty";
const OLD_REVISION: &str = "etcdserver: revision of auth store is old";
const DENIED: &str = "etcdserver: permission denied";
const USER_NOT_FOUND: &str = "etcdserver: user name not found";
const NOT_ENABLED: &str = "etcdserver: authentication is not enabled";
const AUTH_FAILED: &str = "etcdserver: authentication failed, invalid user ID or password";

/// Whether the auth rules decide this entry (the oracle keeps only those).
pub fn is_decided(req: &InternalRequest) -> bool {
    match &req.request {
        Some(r) if is_auth_change(r) => true,
        Some(Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_)) => req.caller.is_some(),
        _ => false,
    }
}

/// The requests that change the auth store (or, for `Authenticate`, read
/// its revision): the checker's own list, not the server's.
fn is_auth_change(req: &Request) -> bool {
    matches!(
        req,
        Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::Authenticate(_)
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleDelete(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_)
    )
}

#[derive(Debug, Clone, Default)]
struct User {
    roles: Vec<String>,
    no_password: bool,
}

/// A granted range: key, range end (empty: one key; `\0`: open-ended), kind.
type Grant = (Vec<u8>, Vec<u8>, PermType);

#[derive(Debug, Clone)]
struct Model {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Vec<Grant>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Need {
    Read,
    Write,
}

/// The end of a range as a comparable bound (`None`: beyond every key).
fn end_of(key: &[u8], range_end: &[u8]) -> Option<Vec<u8>> {
    if range_end.is_empty() {
        let mut k = key.to_vec();
        k.push(0);
        Some(k)
    } else if range_end == [0] {
        None
    } else {
        Some(range_end.to_vec())
    }
}

fn reaches(end: &Option<Vec<u8>>, point: &Option<Vec<u8>>) -> bool {
    match (end, point) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(p)) => e >= p,
    }
}

/// Whether `grants` cover `[key, end)`: sweep a cursor from `key`, jumping
/// to the end of any grant that holds it, until it passes `end`.
/// An empty or inverted range is covered, as etcd 3.4 decides it, when some
/// grant holds its key.
fn covered(grants: &[(Vec<u8>, Option<Vec<u8>>)], key: &[u8], range_end: &[u8]) -> bool {
    let goal = end_of(key, range_end);
    if goal.as_ref().is_some_and(|g| g.as_slice() <= key) {
        return grants
            .iter()
            .any(|(s, e)| s.as_slice() <= key && e.as_ref().is_none_or(|e| e.as_slice() > key));
    }
    let mut cursor: Option<Vec<u8>> = Some(key.to_vec());
    loop {
        let Some(at) = cursor.clone() else {
            return true;
        };
        if let Some(g) = &goal {
            if at >= *g {
                return true;
            }
        }
        let next = grants
            .iter()
            .filter(|(s, e)| *s <= at && reaches(e, &Some(at.clone())) && e.as_ref() != Some(&at))
            .map(|(_, e)| e.clone())
            .max_by(|a, b| match (a, b) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, _) => std::cmp::Ordering::Greater,
                (_, None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) => x.cmp(y),
            });
        match next {
            Some(e) => cursor = e,
            None => return false,
        }
    }
}

impl Model {
    fn new() -> Model {
        Model {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }

    fn grants_of(&self, user: &str) -> String {
        let Some(u) = self.users.get(user) else {
            return "no such user".to_owned();
        };
        u.roles
            .iter()
            .map(|r| {
                let grants: Vec<String> = self
                    .roles
                    .get(r)
                    .map(|g| {
                        g.iter()
                            .map(|(k, e, t)| {
                                format!(
                                    "{:?} [{}, {:?})",
                                    t,
                                    String::from_utf8_lossy(k),
                                    String::from_utf8_lossy(e)
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{r}: {}", grants.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn who(caller: &Caller) -> Option<(&str, u64)> {
        (!(caller.username.is_empty() && caller.auth_revision == 0))
            .then_some((caller.username.as_str(), caller.auth_revision))
    }

    fn is_root(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == ROOT))
    }

    fn admin(&self, caller: Option<&Caller>) -> Result<(), &'static str> {
        if !self.enabled {
            return Ok(());
        }
        let Some((name, _)) = caller.and_then(Self::who).filter(|(n, _)| !n.is_empty()) else {
            return Err(USER_EMPTY);
        };
        if !self.users.contains_key(name) {
            return Err(USER_NOT_FOUND);
        }
        if !self.is_root(name) {
            return Err(DENIED);
        }
        Ok(())
    }

    fn allowed(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
        need: Need,
    ) -> Result<(), &'static str> {
        if !self.enabled {
            return Ok(());
        }
        let Some((name, rev)) = Self::who(caller).filter(|(_, r)| *r != 0) else {
            return Err(USER_EMPTY);
        };
        if rev < self.revision {
            return Err(OLD_REVISION);
        }
        let Some(user) = self.users.get(name) else {
            return Err(DENIED);
        };
        if user.roles.iter().any(|r| r == ROOT) {
            return Ok(());
        }
        let grants: Vec<(Vec<u8>, Option<Vec<u8>>)> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .filter(|(_, _, t)| match need {
                Need::Read => matches!(t, PermType::Read | PermType::Readwrite),
                Need::Write => matches!(t, PermType::Write | PermType::Readwrite),
            })
            .map(|(k, e, _)| (k.clone(), end_of(k, e)))
            .collect();
        let ok = if range_end.is_empty() {
            grants.iter().any(|(s, e)| {
                s.as_slice() <= key && reaches(e, &Some(key.to_vec())) && e.as_deref() != Some(key)
            })
        } else {
            covered(&grants, key, range_end)
        };
        if ok {
            Ok(())
        } else {
            Err(DENIED)
        }
    }

    fn txn(&self, caller: &Caller, t: &TxnRequest) -> Result<(), &'static str> {
        for c in &t.compare {
            self.allowed(caller, &c.key, &c.range_end, Need::Read)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(request_op::Request::RequestRange(g)) => {
                    self.allowed(caller, &g.key, &g.range_end, Need::Read)?
                }
                Some(request_op::Request::RequestPut(p)) => {
                    self.allowed(caller, &p.key, b"", Need::Write)?;
                    if p.prev_kv {
                        self.allowed(caller, &p.key, b"", Need::Read)?;
                    }
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.allowed(caller, &d.key, &d.range_end, Need::Read)?;
                    }
                    self.allowed(caller, &d.key, &d.range_end, Need::Write)?;
                }
                Some(request_op::Request::RequestTxn(inner)) => self.txn(caller, inner)?,
                None => {}
            }
        }
        Ok(())
    }

    /// The model's decision on a client write: `Err` is the refusal.
    fn write(&self, caller: &Caller, req: &Request) -> Result<(), &'static str> {
        match req {
            Request::Put(p) => {
                self.allowed(caller, &p.key, b"", Need::Write)?;
                if p.prev_kv {
                    self.allowed(caller, &p.key, b"", Need::Read)?;
                }
                Ok(())
            }
            Request::DeleteRange(d) => {
                self.allowed(caller, &d.key, &d.range_end, Need::Write)?;
                if d.prev_kv {
                    self.allowed(caller, &d.key, &d.range_end, Need::Read)?;
                }
                Ok(())
            }
            Request::Txn(t) => self.txn(caller, t),
            _ => Ok(()),
        }
    }

    /// Applies an auth change; the error is etcd's text.
    fn change(&mut self, caller: Option<&Caller>, req: &Request) -> Result<(), String> {
        if let Request::Authenticate(a) = req {
            if self.revision != a.checked_revision {
                return Err(OLD_REVISION.into());
            }
            if !self.enabled {
                return Err(NOT_ENABLED.into());
            }
            return match self.users.get(&a.name) {
                Some(u) if !u.no_password => Ok(()),
                _ => Err(AUTH_FAILED.into()),
            };
        }
        if caller.is_some() {
            self.admin(caller)?;
        }
        let bump = match req {
            Request::AuthEnable(_) => {
                if !self.enabled {
                    if !self.users.contains_key(ROOT) {
                        return Err("etcdserver: root user does not exist".into());
                    }
                    if !self.is_root(ROOT) {
                        return Err("etcdserver: root user does not have root role".into());
                    }
                    self.enabled = true;
                }
                false
            }
            Request::AuthDisable(_) => std::mem::replace(&mut self.enabled, false),
            Request::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(USER_EMPTY.into());
                }
                if self.users.contains_key(&r.name) {
                    return Err("etcdserver: user name already exists".into());
                }
                let no_password = r.options.is_some_and(|o| o.no_password);
                self.users.insert(
                    r.name.clone(),
                    User {
                        roles: Vec::new(),
                        no_password,
                    },
                );
                true
            }
            Request::UserDelete(r) => {
                if self.enabled && r.name == ROOT {
                    return Err("etcdserver: invalid auth management".into());
                }
                self.users.remove(&r.name).ok_or(USER_NOT_FOUND)?;
                true
            }
            Request::UserChangePassword(r) => {
                self.users.get(&r.name).ok_or(USER_NOT_FOUND)?;
                true
            }
            Request::UserGrantRole(r) => {
                if r.role != ROOT && !self.roles.contains_key(&r.role) {
                    let _ = self.users.get(&r.user).ok_or(USER_NOT_FOUND)?;
                    return Err("etcdserver: role name not found".into());
                }
                let u = self.users.get_mut(&r.user).ok_or(USER_NOT_FOUND)?;
                if u.roles.contains(&r.role) {
                    false
                } else {
                    u.roles.push(r.role.clone());
                    true
                }
            }
            Request::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT && r.role == ROOT {
                    return Err("etcdserver: invalid auth management".into());
                }
                let u = self.users.get_mut(&r.name).ok_or(USER_NOT_FOUND)?;
                let before = u.roles.len();
                u.roles.retain(|x| x != &r.role);
                if u.roles.len() == before {
                    return Err("etcdserver: role is not granted to the user".into());
                }
                true
            }
            Request::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err("etcdserver: role name is empty".into());
                }
                if self.roles.contains_key(&r.name) {
                    return Err("etcdserver: role name already exists".into());
                }
                self.roles.insert(r.name.clone(), Vec::new());
                true
            }
            Request::RoleDelete(r) => {
                if self.enabled && r.role == ROOT {
                    return Err("etcdserver: invalid auth management".into());
                }
                self.roles
                    .remove(&r.role)
                    .ok_or("etcdserver: role name not found")?;
                for u in self.users.values_mut() {
                    u.roles.retain(|x| x != &r.role);
                }
                true
            }
            Request::RoleGrantPermission(r) => {
                let Some(p) = &r.perm else {
                    return Err("etcdserver: permission not given".into());
                };
                let valid = !p.key.is_empty()
                    && (p.range_end.is_empty() || p.range_end == [0] || p.key < p.range_end);
                if !valid {
                    return Err("etcdserver: invalid auth management".into());
                }
                let grants = self
                    .roles
                    .get_mut(&r.name)
                    .ok_or("etcdserver: role name not found")?;
                let t = PermType::try_from(p.perm_type).unwrap_or(PermType::Read);
                match grants
                    .iter_mut()
                    .find(|(k, e, _)| *k == p.key && *e == p.range_end)
                {
                    Some(g) => g.2 = t,
                    None => grants.push((p.key.clone(), p.range_end.clone(), t)),
                }
                true
            }
            Request::RoleRevokePermission(r) => {
                let grants = self
                    .roles
                    .get_mut(&r.role)
                    .ok_or("etcdserver: role name not found")?;
                let before = grants.len();
                grants.retain(|(k, e, _)| !(*k == r.key && *e == r.range_end));
                if grants.len() == before {
                    return Err("etcdserver: permission is not granted to the role".into());
                }
                true
            }
            _ => false,
        };
        if bump {
            self.revision += 1;
        }
        Ok(())
    }
}

/// Refusals that come before the auth checks (not an auth decision).
fn refused_before_auth(why: &str) -> bool {
    why == "etcdserver: corrupt cluster"
}

/// Replays `log` (index, request, why refused) through the model; returns
/// the violations and a summary.
pub fn check_auth(log: &[(u64, InternalRequest, Option<String>)]) -> (Vec<String>, String) {
    let mut model = Model::new();
    let mut failures = Vec::new();
    let (mut writes, mut denied, mut changes, mut logins) = (0, 0, 0, 0);
    for (index, req, refused) in log {
        let Some(r) = &req.request else { continue };
        if refused.as_deref().is_some_and(refused_before_auth) {
            continue;
        }
        let is_write = matches!(
            r,
            Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_)
        );
        if is_write {
            let Some(caller) = &req.caller else { continue };
            writes += 1;
            match (model.write(caller, r), refused.as_deref()) {
                (Ok(()), Some(why)) if is_auth_refusal(why) => failures.push(format!(
                    "auth: entry {index} was refused \"{why}\" though {caller:?} was permitted at auth revision {}; request {}; the model's grants of that user: {}",
                    model.revision,
                    describe(r),
                    model.grants_of(&caller.username)
                )),
                (Ok(()), _) => {}
                (Err(want), Some(why)) if why == want => denied += 1,
                (Err(want), got) => failures.push(format!(
                    "auth: entry {index} by {caller:?} was {} but the model refuses it \"{want}\" at auth revision {} (enabled: {}); request {}; the model's grants of that user: {}",
                    got.map_or("applied".to_owned(), |g| format!("refused \"{g}\"")),
                    model.revision,
                    model.enabled,
                    describe(r),
                    model.grants_of(&caller.username)
                )),
            }
            continue;
        }
        let before = model.clone();
        let outcome = model.change(req.caller.as_ref(), r);
        if matches!(r, Request::Authenticate(_)) {
            logins += 1;
        } else {
            changes += 1;
        }
        match (&outcome, refused) {
            (Ok(()), None) => {}
            (Err(want), Some(got)) if want == got => {}
            (want, got) => {
                failures.push(format!(
                    "auth: entry {index} ({}) {} but the model says {} (auth revision {}, enabled {})",
                    kind(r),
                    got.as_ref().map_or("took effect".to_owned(), |g| format!("was refused \"{g}\"")),
                    match want {
                        Ok(()) => "it takes effect".to_owned(),
                        Err(w) => format!("\"{w}\""),
                    },
                    before.revision,
                    before.enabled
                ));
                // Follow the cluster so one divergence is reported once.
                if got.is_some() {
                    model = before;
                }
            }
        }
    }
    let note = format!(
        "auth: {writes} client writes checked ({denied} refused by auth), {changes} auth changes, {logins} logins; final auth revision {}, enabled {}",
        model.revision, model.enabled
    );
    (failures, note)
}

/// A write, briefly: the keys and ranges it names.
fn describe(r: &Request) -> String {
    let range = |k: &[u8], e: &[u8]| {
        format!(
            "[{}, {})",
            String::from_utf8_lossy(k),
            if e.is_empty() {
                "·".to_owned()
            } else {
                format!("{:?}", String::from_utf8_lossy(e))
            }
        )
    };
    match r {
        Request::Put(p) => format!("put {} prev_kv={}", range(&p.key, b""), p.prev_kv),
        Request::DeleteRange(d) => format!(
            "delete {} prev_kv={}",
            range(&d.key, &d.range_end),
            d.prev_kv
        ),
        Request::Txn(t) => {
            let ops: Vec<String> = t
                .compare
                .iter()
                .map(|c| format!("cmp {}", range(&c.key, &c.range_end)))
                .chain(
                    t.success
                        .iter()
                        .chain(&t.failure)
                        .map(|op| match &op.request {
                            Some(request_op::Request::RequestRange(g)) => {
                                format!("get {}", range(&g.key, &g.range_end))
                            }
                            Some(request_op::Request::RequestPut(p)) => {
                                format!("put {}", range(&p.key, b""))
                            }
                            Some(request_op::Request::RequestDeleteRange(d)) => format!(
                                "delete {} prev_kv={}",
                                range(&d.key, &d.range_end),
                                d.prev_kv
                            ),
                            Some(request_op::Request::RequestTxn(_)) => "txn".to_owned(),
                            None => "-".to_owned(),
                        }),
                )
                .collect();
            format!("txn {}", ops.join("; "))
        }
        other => kind(other).to_owned(),
    }
}

fn is_auth_refusal(why: &str) -> bool {
    [
        USER_EMPTY,
        OLD_REVISION,
        DENIED,
        "etcdserver: invalid auth token",
    ]
    .contains(&why)
}

fn kind(r: &Request) -> &'static str {
    match r {
        Request::AuthEnable(_) => "auth enable",
        Request::AuthDisable(_) => "auth disable",
        Request::Authenticate(_) => "login",
        Request::UserAdd(_) => "user add",
        Request::UserDelete(_) => "user delete",
        Request::UserChangePassword(_) => "user passwd",
        Request::UserGrantRole(_) => "user grant-role",
        Request::UserRevokeRole(_) => "user revoke-role",
        Request::RoleAdd(_) => "role add",
        Request::RoleDelete(_) => "role delete",
        Request::RoleGrantPermission(_) => "role grant-permission",
        Request::RoleRevokePermission(_) => "role revoke-permission",
        _ => "write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::authpb::Permission;
    use cairn_proto::etcdserverpb::*;

    fn entry(caller: Option<(&str, u64)>, r: Request) -> InternalRequest {
        InternalRequest {
            id: 1,
            member_id: 1,
            caller: caller.map(|(u, rev)| Caller {
                username: u.into(),
                auth_revision: rev,
            }),
            request: Some(r),
        }
    }

    fn setup() -> Vec<(u64, InternalRequest, Option<String>)> {
        let add = |n: &str| {
            Request::UserAdd(AuthUserAddRequest {
                name: n.into(),
                hashed_password: "x".into(),
                ..Default::default()
            })
        };
        let grant = |u: &str, r: &str| {
            Request::UserGrantRole(AuthUserGrantRoleRequest {
                user: u.into(),
                role: r.into(),
            })
        };
        let reqs = vec![
            add("root"),
            grant("root", "root"),
            add("u"),
            Request::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
            Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(Permission {
                    perm_type: PermType::Write as i32,
                    key: b"a".to_vec(),
                    range_end: b"c".to_vec(),
                }),
            }),
            grant("u", "r"),
            Request::AuthEnable(AuthEnableRequest {}),
        ];
        reqs.into_iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, entry(Some(("", 0)), r), None))
            .collect()
    }

    fn put(key: &str) -> Request {
        Request::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn a_permitted_write_that_applied_and_a_denied_one_that_was_refused_pass() {
        let mut log = setup();
        // After setup the revision is 1 + 6 = 7 (enable is not counted).
        log.push((10, entry(Some(("u", 7)), put("b")), None));
        log.push((11, entry(Some(("u", 7)), put("d")), Some(DENIED.into())));
        log.push((12, entry(Some(("", 0)), put("b")), Some(USER_EMPTY.into())));
        log.push((
            13,
            entry(Some(("u", 6)), put("b")),
            Some(OLD_REVISION.into()),
        ));
        let (failures, _) = check_auth(&log);
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn a_denied_write_that_took_effect_is_reported() {
        let mut log = setup();
        log.push((10, entry(Some(("u", 7)), put("d")), None));
        let (failures, _) = check_auth(&log);
        assert_eq!(failures.len(), 1, "{failures:?}");
    }

    #[test]
    fn a_permitted_write_refused_for_permission_is_reported() {
        let mut log = setup();
        log.push((10, entry(Some(("u", 7)), put("b")), Some(DENIED.into())));
        let (failures, _) = check_auth(&log);
        assert_eq!(failures.len(), 1, "{failures:?}");
    }

    #[test]
    fn a_non_root_auth_change_that_took_effect_is_reported() {
        let mut log = setup();
        log.push((
            10,
            entry(Some(("u", 7)), Request::AuthDisable(AuthDisableRequest {})),
            None,
        ));
        let (failures, _) = check_auth(&log);
        assert_eq!(failures.len(), 1, "{failures:?}");
    }

    #[test]
    fn the_sweep_covers_ranges_made_of_adjacent_grants() {
        let g =
            |s: &str, e: Option<&str>| (s.as_bytes().to_vec(), e.map(|e| e.as_bytes().to_vec()));
        assert!(covered(&[g("a", Some("b")), g("b", Some("c"))], b"a", b"c"));
        assert!(!covered(
            &[g("a", Some("b")), g("ba", Some("c"))],
            b"a",
            b"c"
        ));
        assert!(covered(&[g("a", None)], b"x", b"\0"));
        assert!(!covered(&[g("a", Some("z"))], b"x", b"\0"));
        // Empty or inverted: allowed when the key is held.
        assert!(covered(&[g("a", Some("d"))], b"c", b"b"));
        assert!(covered(&[g("c", Some("d"))], b"c", b"b"));
        assert!(!covered(&[g("d", Some("e"))], b"c", b"b"));
    }
}
