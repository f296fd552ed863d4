//! Authentication and role-based access (DESIGN §5): users, roles, range
//! permissions and the auth revision — the replicated state — and the
//! checks every request goes through when auth is enabled.
//!
//! `AuthStore` is a pure state machine. Every change is applied from the
//! Raft log (`src/server/apply.rs`) and writes its records into the apply's
//! batch, in the `auth` column family, together with the applied index:
//! `authEnabled` (one byte, 1 or 0), `authRevision` (u64 big-endian),
//! `user/<name>` (an `authpb.User`) and `role/<name>` (an `authpb.Role`).
//! A successful change raises the auth revision by one (etcd's
//! `commitRevision`), except enabling auth, which etcd does not count; a fresh
//! store starts at revision 1, as etcd's does.
//!
//! etcd's rules, kept here: enabling needs a `root` user holding the `root`
//! role; while auth is on, `root` cannot be deleted or lose `root`, and the
//! `root` role cannot be deleted; a user holding `root` may do anything. The
//! `root` role need not exist to be granted. A request's permission is
//! checked on the key range it touches: a point when it has no range end,
//! `[key, +∞)` when its range end is `\0`, else `[key, range_end)`, and the
//! union of the user's roles' ranges of that kind must cover it.
//!
//! Passwords: only bcrypt hashes (`hash_password`, `verify_password`) are
//! stored, and they are computed off the node loop before proposing.
//! Tests: `src/auth/tests.rs` (rules, persistence, a model of the permission
//! checks), `tests/auth_interop.rs` (etcdctl and every RPC against etcd 3.4).

pub mod jwt;
pub mod perms;
#[cfg(test)]
mod tests;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};

use cairn_proto::authpb::{Permission, Role, User, UserAddOptions};
use cairn_proto::etcdserverpb::{
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest,
};
use cairn_runtime::{Direction, Storage, StorageError, StorageSnapshot, WriteBatch};
use prost::Message as _;

use perms::UserPerms;

/// The column family of the auth state.
pub const CF_AUTH: &str = "auth";
const KEY_ENABLED: &[u8] = b"authEnabled";
const KEY_REVISION: &[u8] = b"authRevision";
const USER_PREFIX: &[u8] = b"user/";
const ROLE_PREFIX: &[u8] = b"role/";

/// The name of both the all-powerful user and its role.
pub const ROOT: &str = "root";

/// etcd's default bcrypt cost (`--bcrypt-cost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// Who sent a request, as the auth checks see it: the user its token (or
/// client certificate) names and the auth revision in force when the member
/// accepted it. A request without credentials has none (`Option::None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

/// The kind of access a request needs on a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// etcd's auth errors, with its exact messages (the gRPC codes are in
/// `src/api/mod.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// Not one of etcd's gRPC errors: it reaches clients as `Unknown`.
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// A login on a member holding only the JWT public key (not one of
    /// etcd's gRPC errors: it reaches clients as `Unknown`).
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
}

impl AuthError {
    /// etcd's own text of the error (its `auth` package, before the gRPC
    /// layer translates it), which some RPCs answer as it is, with code
    /// `Unknown`: Hash, HashKV, Defragment and Snapshot refused by auth.
    pub fn raw_message(&self) -> String {
        match self {
            AuthError::UserAlreadyExist => "auth: user already exists".to_owned(),
            AuthError::UserNotFound => "auth: user not found".to_owned(),
            AuthError::RoleAlreadyExist => "auth: role already exists".to_owned(),
            AuthError::RoleNotFound => "auth: role not found".to_owned(),
            AuthError::AuthOldRevision => "auth: revision in header is old".to_owned(),
            AuthError::NoPasswordUser | AuthError::VerifyOnly => self.to_string(),
            other => other.to_string().replacen("etcdserver: ", "auth: ", 1),
        }
    }
}

/// What an applied auth change means for the member-local token table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEffect {
    None,
    /// Auth was turned on.
    Enabled,
    /// Auth was turned off: every token is void.
    Disabled,
    /// The user was deleted or its password changed: its tokens are void.
    InvalidateUser(String),
}

/// The replicated auth state (module docs).
#[derive(Debug, Clone)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's merged permissions, rebuilt after every change.
    perms: HashMap<String, UserPerms>,
}

impl Default for AuthStore {
    fn default() -> Self {
        AuthStore::new()
    }
}

fn user_key(name: &str) -> Vec<u8> {
    let mut k = USER_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn role_key(name: &str) -> Vec<u8> {
    let mut k = ROLE_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The first key after every key starting with `prefix` (whose last byte
/// is `/`, so never 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut e = prefix.to_vec();
    if let Some(last) = e.last_mut() {
        *last += 1;
    }
    e
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT)
}

fn corrupt(what: &str, k: &[u8], e: impl std::fmt::Display) -> StorageError {
    StorageError::Corruption(format!("auth record {what} {k:?}: {e}"))
}

/// Whether `[key, range_end)` may be granted (etcd's rules): a non-empty
/// key, and no range end, `\0` (open-ended) or one above the key. etcd
/// rejects empty ranges such as `[b, a)` since 3.4.24 and 3.5.8 (etcd pull
/// request 15294); Debian's 3.4.23 and PyPI's 3.5.1 still grant them.
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

impl AuthStore {
    /// A fresh store: auth off, no users or roles, revision 1.
    pub fn new() -> AuthStore {
        AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            perms: HashMap::new(),
        }
    }

    /// The store as `storage` holds it (a fresh one when it holds none).
    pub fn load(storage: &dyn Storage) -> Result<AuthStore, StorageError> {
        Self::load_view(&*storage.snapshot())
    }

    /// The store as a consistent storage view holds it (what `load` reads,
    /// from a `StorageSnapshot`: a backup exports the auth state of the
    /// same view as the rest of its image).
    pub fn load_view(view: &dyn StorageSnapshot) -> Result<AuthStore, StorageError> {
        let mut store = AuthStore::new();
        store.enabled = view.get(CF_AUTH, KEY_ENABLED)?.as_deref() == Some(&[1u8][..]);
        if let Some(v) = view.get(CF_AUTH, KEY_REVISION)? {
            let b = <[u8; 8]>::try_from(v.as_slice())
                .map_err(|_| corrupt("revision", KEY_REVISION, "not 8 bytes"))?;
            store.revision = u64::from_be_bytes(b);
        }
        let user_end = prefix_end(USER_PREFIX);
        for item in view.scan(CF_AUTH, USER_PREFIX, Some(&user_end), Direction::Forward)? {
            let (k, v) = item?;
            let user = User::decode(v.as_slice()).map_err(|e| corrupt("user", &k, e))?;
            let name = String::from_utf8(user.name.clone()).map_err(|e| corrupt("user", &k, e))?;
            store.users.insert(name, user);
        }
        let role_end = prefix_end(ROLE_PREFIX);
        for item in view.scan(CF_AUTH, ROLE_PREFIX, Some(&role_end), Direction::Forward)? {
            let (k, v) = item?;
            let role = Role::decode(v.as_slice()).map_err(|e| corrupt("role", &k, e))?;
            let name = String::from_utf8(role.name.clone()).map_err(|e| corrupt("role", &k, e))?;
            store.roles.insert(name, role);
        }
        store.refresh_perms();
        Ok(store)
    }

    /// A store with these contents (a restored backup); `write_all` stores it.
    pub fn from_parts(enabled: bool, revision: u64, users: Vec<User>, roles: Vec<Role>) -> Self {
        let mut store = AuthStore::new();
        store.enabled = enabled;
        store.revision = revision.max(1);
        for u in users {
            store
                .users
                .insert(String::from_utf8_lossy(&u.name).into_owned(), u);
        }
        for r in roles {
            store
                .roles
                .insert(String::from_utf8_lossy(&r.name).into_owned(), r);
        }
        store.refresh_perms();
        store
    }

    /// Adds every record of the store to `batch`.
    pub fn write_all(&self, batch: &mut WriteBatch) {
        batch.put(CF_AUTH, KEY_ENABLED, vec![u8::from(self.enabled)]);
        batch.put(CF_AUTH, KEY_REVISION, self.revision.to_be_bytes().to_vec());
        for (name, u) in &self.users {
            batch.put(CF_AUTH, user_key(name), u.encode_to_vec());
        }
        for (name, r) in &self.roles {
            batch.put(CF_AUTH, role_key(name), r.encode_to_vec());
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    fn refresh_perms(&mut self) {
        self.perms = self
            .users
            .iter()
            .map(|(name, u)| {
                let roles = u.roles.iter().filter_map(|r| self.roles.get(r));
                (name.clone(), UserPerms::merge(roles))
            })
            .collect();
    }

    /// Records a change: the revision goes up by one, the caches follow.
    fn commit(&mut self, batch: &mut WriteBatch) {
        self.revision += 1;
        batch.put(CF_AUTH, KEY_REVISION, self.revision.to_be_bytes().to_vec());
        self.refresh_perms();
    }

    fn put_user(&mut self, batch: &mut WriteBatch, name: &str, user: User) {
        batch.put(CF_AUTH, user_key(name), user.encode_to_vec());
        self.users.insert(name.to_owned(), user);
    }

    fn put_role(&mut self, batch: &mut WriteBatch, name: &str, role: Role) {
        batch.put(CF_AUTH, role_key(name), role.encode_to_vec());
        self.roles.insert(name.to_owned(), role);
    }

    // ---- changes (applied from the log) ----

    /// Turns auth on (a no-op when it is on). Not counted as a revision.
    pub fn enable(&mut self, batch: &mut WriteBatch) -> Result<TokenEffect, AuthError> {
        if self.enabled {
            return Ok(TokenEffect::None);
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        batch.put(CF_AUTH, KEY_ENABLED, vec![1u8]);
        self.refresh_perms();
        Ok(TokenEffect::Enabled)
    }

    /// Turns auth off (a no-op when it is off).
    pub fn disable(&mut self, batch: &mut WriteBatch) -> TokenEffect {
        if !self.enabled {
            return TokenEffect::None;
        }
        self.enabled = false;
        batch.put(CF_AUTH, KEY_ENABLED, vec![0u8]);
        self.commit(batch);
        TokenEffect::Disabled
    }

    /// Adds a user; `r.hashedPassword` is the base64 bcrypt hash (empty for
    /// a user without password).
    pub fn user_add(
        &mut self,
        r: &AuthUserAddRequest,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        if r.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(&r.name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let options = r.options.unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password {
            Vec::new()
        } else {
            decode_hash(&r.hashed_password).ok_or(AuthError::NoPasswordUser)?
        };
        let user = User {
            name: r.name.as_bytes().to_vec(),
            password,
            roles: Vec::new(),
            options: Some(options),
        };
        self.put_user(batch, &r.name, user);
        self.commit(batch);
        Ok(TokenEffect::None)
    }

    pub fn user_delete(
        &mut self,
        name: &str,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.users.remove(name).is_none() {
            return Err(AuthError::UserNotFound);
        }
        batch.delete(CF_AUTH, user_key(name));
        self.commit(batch);
        Ok(TokenEffect::InvalidateUser(name.to_owned()))
    }

    pub fn user_change_password(
        &mut self,
        r: &AuthUserChangePasswordRequest,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        let Some(user) = self.users.get(&r.name) else {
            return Err(AuthError::UserNotFound);
        };
        let mut user = user.clone();
        user.password = decode_hash(&r.hashed_password).ok_or(AuthError::NoPasswordUser)?;
        self.put_user(batch, &r.name, user);
        self.commit(batch);
        Ok(TokenEffect::InvalidateUser(r.name.clone()))
    }

    pub fn user_grant_role(
        &mut self,
        user: &str,
        role: &str,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        let Some(u) = self.users.get(user) else {
            return Err(AuthError::UserNotFound);
        };
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        if u.roles.iter().any(|r| r == role) {
            // etcd ignores granting a role the user has (no new revision).
            return Ok(TokenEffect::None);
        }
        let mut u = u.clone();
        u.roles.push(role.to_owned());
        u.roles.sort();
        self.put_user(batch, user, u);
        self.commit(batch);
        Ok(TokenEffect::None)
    }

    pub fn user_revoke_role(
        &mut self,
        user: &str,
        role: &str,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        if self.enabled && user == ROOT && role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let Some(u) = self.users.get(user) else {
            return Err(AuthError::UserNotFound);
        };
        let before = u.roles.len();
        let mut u = u.clone();
        u.roles.retain(|r| r != role);
        if u.roles.len() == before {
            return Err(AuthError::RoleNotGranted);
        }
        self.put_user(batch, user, u);
        self.commit(batch);
        Ok(TokenEffect::None)
    }

    pub fn role_add(
        &mut self,
        name: &str,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        let role = Role {
            name: name.as_bytes().to_vec(),
            key_permission: Vec::new(),
        };
        self.put_role(batch, name, role);
        self.commit(batch);
        Ok(TokenEffect::None)
    }

    pub fn role_delete(
        &mut self,
        name: &str,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.roles.remove(name).is_none() {
            return Err(AuthError::RoleNotFound);
        }
        batch.delete(CF_AUTH, role_key(name));
        // The role leaves every user that held it.
        let holders: Vec<String> = self
            .users
            .iter()
            .filter(|(_, u)| u.roles.iter().any(|r| r == name))
            .map(|(n, _)| n.clone())
            .collect();
        for holder in holders {
            if let Some(u) = self.users.get(&holder) {
                let mut u = u.clone();
                u.roles.retain(|r| r != name);
                self.put_user(batch, &holder, u);
            }
        }
        self.commit(batch);
        Ok(TokenEffect::None)
    }

    pub fn role_grant_permission(
        &mut self,
        r: &AuthRoleGrantPermissionRequest,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        let Some(perm) = &r.perm else {
            return Err(AuthError::PermissionNotGiven);
        };
        if !is_valid_permission_range(&perm.key, &perm.range_end) {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let Some(role) = self.roles.get(&r.name) else {
            return Err(AuthError::RoleNotFound);
        };
        let mut role = role.clone();
        match role
            .key_permission
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end)
        {
            Some(existing) => existing.perm_type = perm.perm_type,
            None => {
                role.key_permission.push(Permission {
                    perm_type: perm.perm_type,
                    key: perm.key.clone(),
                    range_end: perm.range_end.clone(),
                });
                // etcd keeps a role's permissions sorted by key (stable).
                role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        self.put_role(batch, &r.name, role);
        self.commit(batch);
        Ok(TokenEffect::None)
    }

    pub fn role_revoke_permission(
        &mut self,
        r: &AuthRoleRevokePermissionRequest,
        batch: &mut WriteBatch,
    ) -> Result<TokenEffect, AuthError> {
        let Some(role) = self.roles.get(&r.role) else {
            return Err(AuthError::RoleNotFound);
        };
        let mut role = role.clone();
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| !(p.key == r.key && p.range_end == r.range_end));
        if role.key_permission.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.put_role(batch, &r.role, role);
        self.commit(batch);
        Ok(TokenEffect::None)
    }

    // ---- checks ----

    /// etcd's `isOpPermitted`: may `who` access `[key, range_end)`?
    pub fn check(
        &self,
        who: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(who) = who.filter(|w| w.revision != 0) else {
            return Err(AuthError::UserEmpty);
        };
        if who.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let Some(user) = self.users.get(&who.username) else {
            return Err(AuthError::PermissionDenied);
        };
        if has_root_role(user) {
            return Ok(());
        }
        match self.perms.get(&who.username) {
            Some(p) if p.allows(key, range_end, access) => Ok(()),
            _ => Err(AuthError::PermissionDenied),
        }
    }

    /// etcd's `IsAdminPermitted`: is `who` a user holding `root`?
    pub fn check_admin(&self, who: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(who) = who.filter(|w| !w.username.is_empty()) else {
            return Err(AuthError::UserEmpty);
        };
        let Some(user) = self.users.get(&who.username) else {
            return Err(AuthError::UserNotFound);
        };
        if !has_root_role(user) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's `requireAuthInfo`: with auth on, a request must name a user.
    pub fn require_user(&self, who: Option<&AuthInfo>) -> Result<(), AuthError> {
        if self.enabled && who.is_none() {
            return Err(AuthError::UserEmpty);
        }
        Ok(())
    }

    /// Whether `user` holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// The stored bcrypt hash of a user that may log in with a password:
    /// etcd's `CheckPassword` before the hash comparison.
    pub fn password_hash(&self, name: &str) -> Result<Vec<u8>, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.options.is_some_and(|o| o.no_password) {
            return Err(AuthError::NoPasswordUser);
        }
        Ok(user.password.clone())
    }

    /// The apply of a checked login: may `name` get a token now?
    pub fn authenticate(&self, name: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.options.is_some_and(|o| o.no_password) {
            return Err(AuthError::AuthFailed);
        }
        Ok(())
    }

    /// A role's permissions (etcd answers them in stored order).
    pub fn role_permissions(&self, role: &str) -> Result<Vec<Permission>, AuthError> {
        self.roles
            .get(role)
            .map(|r| r.key_permission.clone())
            .ok_or(AuthError::RoleNotFound)
    }

    /// A user's roles.
    pub fn user_roles(&self, name: &str) -> Result<Vec<String>, AuthError> {
        self.users
            .get(name)
            .map(|u| u.roles.clone())
            .ok_or(AuthError::UserNotFound)
    }
}

/// The stored form of a bcrypt hash proposed as base64 (etcd 3.5's
/// `hashedPassword`); `None` when empty or not base64.
fn decode_hash(b64: &str) -> Option<Vec<u8>> {
    if b64.is_empty() {
        return None;
    }
    base64_decode(b64)
}

/// bcrypt-hashes `password` at `cost` with `salt` (slow on purpose: call it
/// off the node loop) and returns it as base64, as it is proposed.
pub fn hash_password(password: &str, cost: u32, salt: [u8; 16]) -> Result<String, String> {
    let hash = bcrypt::hash_with_salt(password, cost, salt).map_err(|e| e.to_string())?;
    Ok(base64_encode(hash.to_string().as_bytes()))
}

/// Whether `password` matches the stored bcrypt `hash` (slow on purpose).
pub fn verify_password(password: &str, hash: &[u8]) -> bool {
    std::str::from_utf8(hash)
        .ok()
        .is_some_and(|h| bcrypt::verify(password, h).unwrap_or(false))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional); `None` on any other character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
