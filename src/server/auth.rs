//! The server side of auth: who a request comes from, the checks etcd makes
//! before serving a request and when applying it, and the Auth service's
//! RPCs.
//!
//! - `Server::caller` turns a request's credentials into a `Caller`: a
//!   simple token (waiting until this member has applied the login that made
//!   it) or, with `--client-cert-auth`, the client certificate's common name.
//!   A token this member does not know is `invalid auth token`.
//! - Reads (Range, read-only Txn) are checked against the applied auth state
//!   before reading and answered `revision of auth store is old` if it
//!   changed meanwhile (etcd's `doSerialize`). Writes carry the caller into
//!   the log (`InternalRequest.caller`) and are checked when applied
//!   (`check_request`), against the auth state in force then: a permission
//!   revoked before a request commits is never bypassed.
//! - Auth changes are proposed; passwords are bcrypt-hashed before proposing,
//!   on a blocking thread (`cairn_runtime::run_blocking`), never on the node
//!   loop. A login checks the password off the loop too, then proposes the
//!   token so every member learns it.
//! Tests: `src/auth/tests.rs`, `tests/auth_interop.rs`.

use cairn_proto::cairnpb::{self, internal_request::Request, InternalAuthenticate};
use cairn_proto::etcdserverpb::*;
use std::sync::atomic::Ordering;

use super::apply::Applied;
use super::{Server, ServerError};
use crate::auth::{self, tokens, Access, AuthError, AuthInfo, AuthStore};
use crate::lease::{LeaseId, Lessor};

/// What a request carried to say who sent it.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The `token` (or `authorization`) metadata.
    pub token: Option<String>,
    /// The verified client certificate's common name.
    pub common_name: Option<String>,
}

/// Who a request comes from, as the auth state resolved it when the member
/// accepted it. The default is a client without credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub info: Option<AuthInfo>,
    /// The token it came with (passed on when a request is forwarded).
    pub token: Option<String>,
}

impl Caller {
    /// The caller as the log records it.
    pub fn record(&self) -> cairnpb::Caller {
        match &self.info {
            Some(i) => cairnpb::Caller {
                username: i.username.clone(),
                auth_revision: i.revision,
            },
            None => cairnpb::Caller::default(),
        }
    }
}

/// The caller a log entry names (`None`: a client without credentials).
pub fn caller_of(record: &cairnpb::Caller) -> Option<AuthInfo> {
    if record.username.is_empty() && record.auth_revision == 0 {
        None
    } else {
        Some(AuthInfo {
            username: record.username.clone(),
            revision: record.auth_revision,
        })
    }
}

/// Whether `req` changes the auth state (a login included).
pub fn is_auth_change(req: &Request) -> bool {
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

/// The checks a client's entry must pass when applied (etcd's
/// `authApplierV3`): admin rights for auth changes; range permissions for
/// writes (every compare and operation of a txn, nested ones too); and for
/// a put with a lease or a lease revoke, write permission on every key the
/// lease holds.
pub fn check_request(
    auth: &AuthStore,
    lessor: &Lessor,
    who: Option<&AuthInfo>,
    req: &Request,
) -> Result<(), AuthError> {
    match req {
        Request::Authenticate(_) => Ok(()),
        r if is_auth_change(r) => auth.check_admin(who),
        Request::Put(r) => check_put(auth, lessor, who, r),
        Request::DeleteRange(r) => check_delete(auth, who, r),
        Request::Txn(r) => check_txn(auth, lessor, who, r),
        Request::LeaseRevoke(r) => check_lease_keys(auth, lessor, who, r.id),
        _ => Ok(()),
    }
}

fn check_put(
    auth: &AuthStore,
    lessor: &Lessor,
    who: Option<&AuthInfo>,
    r: &PutRequest,
) -> Result<(), AuthError> {
    auth.check(who, &r.key, b"", Access::Write)?;
    // A user who could not revoke the lease may not attach to it.
    check_lease_keys(auth, lessor, who, r.lease)?;
    if r.prev_kv {
        auth.check(who, &r.key, b"", Access::Read)?;
    }
    Ok(())
}

fn check_delete(
    auth: &AuthStore,
    who: Option<&AuthInfo>,
    r: &DeleteRangeRequest,
) -> Result<(), AuthError> {
    auth.check(who, &r.key, &r.range_end, Access::Write)?;
    if r.prev_kv {
        auth.check(who, &r.key, &r.range_end, Access::Read)?;
    }
    Ok(())
}

/// Every compare, then every operation of both branches, in order.
pub fn check_txn(
    auth: &AuthStore,
    lessor: &Lessor,
    who: Option<&AuthInfo>,
    r: &TxnRequest,
) -> Result<(), AuthError> {
    for c in &r.compare {
        auth.check(who, &c.key, &c.range_end, Access::Read)?;
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(g)) => {
                auth.check(who, &g.key, &g.range_end, Access::Read)?
            }
            Some(request_op::Request::RequestPut(p)) => check_put(auth, lessor, who, p)?,
            Some(request_op::Request::RequestDeleteRange(d)) => {
                if d.prev_kv {
                    auth.check(who, &d.key, &d.range_end, Access::Read)?;
                }
                auth.check(who, &d.key, &d.range_end, Access::Write)?;
            }
            Some(request_op::Request::RequestTxn(t)) => check_txn(auth, lessor, who, t)?,
            None => {}
        }
    }
    Ok(())
}

/// Write permission on every key attached to `lease` (admins: always).
fn check_lease_keys(
    auth: &AuthStore,
    lessor: &Lessor,
    who: Option<&AuthInfo>,
    lease: i64,
) -> Result<(), AuthError> {
    if lease == 0 || auth.check_admin(who).is_ok() {
        return Ok(());
    }
    for key in lessor.keys(LeaseId(lease)).unwrap_or_default() {
        auth.check(who, &key, b"", Access::Write)?;
    }
    Ok(())
}

/// Read permission on every key attached to each of `leases` (admins:
/// always): etcd's check for TimeToLive with keys and Leases.
fn check_lease_reads(
    auth: &AuthStore,
    lessor: &Lessor,
    who: Option<&AuthInfo>,
    leases: &[LeaseId],
) -> Result<(), AuthError> {
    if auth.check_admin(who).is_ok() {
        return Ok(());
    }
    for &id in leases {
        for key in lessor.keys(id).unwrap_or_default() {
            auth.check(who, &key, b"", Access::Read)?;
        }
    }
    Ok(())
}

/// Applies an auth change from the log; `Ok(Some(token))` for a login
/// (any other request: nothing).
pub fn apply_change(
    auth: &mut AuthStore,
    tokens: &mut tokens::SimpleTokens,
    req: &Request,
    index: u64,
    now: cairn_runtime::MonoTime,
    batch: &mut cairn_runtime::WriteBatch,
) -> Result<Option<(String, u64)>, AuthError> {
    let effect = match req {
        Request::AuthEnable(_) => auth.enable(batch),
        Request::AuthDisable(_) => Ok(auth.disable(batch)),
        Request::UserAdd(r) => auth.user_add(r, batch),
        Request::UserDelete(r) => auth.user_delete(&r.name, batch),
        Request::UserChangePassword(r) => auth.user_change_password(r, batch),
        Request::UserGrantRole(r) => auth.user_grant_role(&r.user, &r.role, batch),
        Request::UserRevokeRole(r) => auth.user_revoke_role(&r.name, &r.role, batch),
        Request::RoleAdd(r) => auth.role_add(&r.name, batch),
        Request::RoleDelete(r) => auth.role_delete(&r.role, batch),
        Request::RoleGrantPermission(r) => auth.role_grant_permission(r, batch),
        Request::RoleRevokePermission(r) => auth.role_revoke_permission(r, batch),
        Request::Authenticate(a) => return login(auth, tokens, a, index, now).map(Some),
        _ => return Ok(None),
    };
    effect.map(|effect| {
        tokens.apply(&effect);
        None
    })
}

fn login(
    auth: &AuthStore,
    tokens: &mut tokens::SimpleTokens,
    a: &InternalAuthenticate,
    index: u64,
    now: cairn_runtime::MonoTime,
) -> Result<(String, u64), AuthError> {
    if auth.revision() != a.checked_revision {
        // The password was checked against an older state: check again.
        return Err(AuthError::AuthOldRevision);
    }
    auth.authenticate(&a.name)?;
    // No prefix: JWT tokens, which the proposer signs itself.
    let token = if a.simple_token.is_empty() {
        String::new()
    } else {
        tokens.assign(&a.simple_token, index, &a.name, now)
    };
    Ok((token, auth.revision()))
}

/// How many times a login is retried when auth changed between the password
/// check and its apply (etcd retries until they agree).
const LOGIN_ATTEMPTS: usize = 5;

impl Server {
    pub fn auth_enabled(&self) -> bool {
        self.shared.auth().is_enabled()
    }

    /// Resolves a request's credentials (etcd's `AuthInfoFromCtx`, then the
    /// client certificate): with auth off, nobody in particular.
    pub async fn caller(&self, creds: Credentials) -> Result<Caller, ServerError> {
        if !self.auth_enabled() {
            return Ok(Caller::default());
        }
        if let Some(token) = creds.token.filter(|t| !t.is_empty()) {
            if let Some(jwt) = &self.shared.config.jwt {
                // A JWT names the auth revision it was issued at.
                let (username, revision) = jwt
                    .check(&token, self.shared.clock.unix_now())
                    .ok_or(AuthError::InvalidAuthToken)?;
                return Ok(Caller {
                    info: Some(AuthInfo { username, revision }),
                    token: Some(token),
                });
            }
            let index = tokens::token_index(&token).ok_or(AuthError::InvalidAuthToken)?;
            // The login that made it may not be applied here yet.
            if self.shared.raft.applied_index.load(Ordering::SeqCst) < index {
                let applied = self.shared.applied.wait_for(index);
                self.within_request_timeout(async {
                    applied.await.map_err(|_| ServerError::Stopped)
                })
                .await
                .map_err(|_| ServerError::Auth(AuthError::InvalidAuthToken))?;
            }
            let now = self.shared.clock.now();
            let user = self
                .shared
                .tokens()
                .user_of(&token, now)
                .ok_or(AuthError::InvalidAuthToken)?;
            let revision = self.shared.auth().revision();
            return Ok(Caller {
                info: Some(AuthInfo {
                    username: user,
                    revision,
                }),
                token: Some(token),
            });
        }
        if let Some(cn) = creds.common_name.filter(|c| !c.is_empty()) {
            let revision = self.shared.auth().revision();
            return Ok(Caller {
                info: Some(AuthInfo {
                    username: cn,
                    revision,
                }),
                token: None,
            });
        }
        Ok(Caller::default())
    }

    /// A read's permission, before reading.
    pub(super) fn check_read(
        &self,
        who: &Caller,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), ServerError> {
        Ok(self
            .shared
            .auth()
            .check(who.info.as_ref(), key, range_end, Access::Read)?)
    }

    /// A watch needs read permission on its range (etcd's `isWatchPermitted`).
    pub fn check_watch(
        &self,
        who: &Caller,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), ServerError> {
        self.check_read(who, key, range_end)
    }

    /// After a read: the auth state must not have changed since the caller
    /// was resolved (etcd's `doSerialize`).
    pub(super) fn check_still_current(&self, who: &Caller) -> Result<(), ServerError> {
        match &who.info {
            Some(i) if i.revision != 0 && i.revision != self.shared.auth().revision() => {
                Err(AuthError::AuthOldRevision.into())
            }
            _ => Ok(()),
        }
    }

    /// A read-only txn's permissions, before reading.
    pub(super) fn check_read_txn(&self, who: &Caller, r: &TxnRequest) -> Result<(), ServerError> {
        let auth = self.shared.auth();
        let lessor = self.shared.lessor();
        Ok(check_txn(&auth, &lessor, who.info.as_ref(), r)?)
    }

    /// Root only (etcd's `IsAdminPermitted`).
    pub fn check_admin(&self, who: &Caller) -> Result<(), ServerError> {
        Ok(self.shared.auth().check_admin(who.info.as_ref())?)
    }

    /// With auth on, the request must name a user (etcd's `requireAuthInfo`).
    pub fn require_user(&self, who: &Caller) -> Result<(), ServerError> {
        Ok(self.shared.auth().require_user(who.info.as_ref())?)
    }

    /// etcd's `checkLeaseRenew`: write permission on the lease's keys.
    pub fn check_lease_renew(&self, who: &Caller, id: i64) -> Result<(), ServerError> {
        let auth = self.shared.auth();
        if !auth.is_enabled() {
            return Ok(());
        }
        auth.require_user(who.info.as_ref())?;
        let lessor = self.shared.lessor();
        Ok(check_lease_keys(&auth, &lessor, who.info.as_ref(), id)?)
    }

    /// etcd's checks for TimeToLive with keys (`ids` one lease) and Leases
    /// (all of them): read permission on every attached key.
    pub fn check_lease_reads(&self, who: &Caller, ids: Option<&[i64]>) -> Result<(), ServerError> {
        let auth = self.shared.auth();
        if !auth.is_enabled() {
            return Ok(());
        }
        auth.require_user(who.info.as_ref())?;
        let lessor = self.shared.lessor();
        let leases: Vec<LeaseId> = match ids {
            Some(ids) => ids.iter().map(|&i| LeaseId(i)).collect(),
            None => lessor.leases(),
        };
        Ok(check_lease_reads(
            &auth,
            &lessor,
            who.info.as_ref(),
            &leases,
        )?)
    }

    async fn propose_auth(&self, who: &Caller, request: Request) -> Result<i64, ServerError> {
        match self.propose_as(who, request).await? {
            (Applied::Auth(_), revision) => Ok(revision),
            (other, _) => panic!("an auth change was applied as {other:?}"),
        }
    }

    // ---- the Auth service ----

    pub async fn auth_enable(&self, who: &Caller) -> Result<AuthEnableResponse, ServerError> {
        let rev = self
            .propose_auth(who, Request::AuthEnable(AuthEnableRequest {}))
            .await?;
        Ok(AuthEnableResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn auth_disable(&self, who: &Caller) -> Result<AuthDisableResponse, ServerError> {
        let rev = self
            .propose_auth(who, Request::AuthDisable(AuthDisableRequest {}))
            .await?;
        Ok(AuthDisableResponse {
            header: Some(self.header(rev)),
        })
    }

    /// Reads of the auth state are linearizable (etcd 3.4 sends them through
    /// Raft); `check` runs on the state after the barrier.
    async fn auth_read<T>(
        &self,
        f: impl FnOnce(&AuthStore) -> Result<T, AuthError>,
    ) -> Result<(T, ResponseHeader), ServerError> {
        self.linearizable_barrier().await?;
        let header = self.header(self.current_revision());
        let auth = self.shared.auth();
        Ok((f(&auth)?, header))
    }

    pub async fn auth_status(&self, who: &Caller) -> Result<AuthStatusResponse, ServerError> {
        let who = who.info.clone();
        let ((enabled, rev), header) = self
            .auth_read(|a| {
                a.check_admin(who.as_ref())?;
                Ok((a.is_enabled(), a.revision()))
            })
            .await?;
        Ok(AuthStatusResponse {
            header: Some(header),
            enabled,
            auth_revision: rev,
        })
    }

    /// A login: the password is checked here (off the node loop), then the
    /// token is proposed so that every member knows it.
    pub async fn authenticate(
        &self,
        req: AuthenticateRequest,
    ) -> Result<AuthenticateResponse, ServerError> {
        for _ in 0..LOGIN_ATTEMPTS {
            let (hash, checked_revision) = {
                let auth = self.shared.auth();
                (auth.password_hash(&req.name)?, auth.revision())
            };
            let password = req.password.clone();
            let ok = cairn_runtime::run_blocking(move || auth::verify_password(&password, &hash))
                .await
                .map_err(|_| ServerError::Stopped)?;
            if !ok {
                tracing::warn!(user = %req.name, "authentication failed");
                return Err(AuthError::AuthFailed.into());
            }
            let prefix = if self.shared.config.jwt.is_some() {
                String::new()
            } else {
                let mut rng = self.shared.token_rng();
                tokens::gen_prefix(&mut *rng)
            };
            let request = Request::Authenticate(InternalAuthenticate {
                name: req.name.clone(),
                simple_token: prefix,
                checked_revision,
            });
            match self.propose_as(&Caller::default(), request).await {
                Ok((Applied::Auth(Some((token, auth_revision))), rev)) => {
                    let token = match &self.shared.config.jwt {
                        Some(jwt) => {
                            jwt.issue(&req.name, auth_revision, self.shared.clock.unix_now())?
                        }
                        None => token,
                    };
                    return Ok(AuthenticateResponse {
                        header: Some(self.header(rev)),
                        token,
                    });
                }
                Ok((other, _)) => panic!("a login was applied as {other:?}"),
                Err(ServerError::Auth(AuthError::AuthOldRevision)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AuthError::AuthOldRevision.into())
    }

    /// bcrypt at the configured cost, off the node loop; base64 as proposed.
    async fn hash_new_password(&self, password: String) -> Result<String, ServerError> {
        let cost = self.shared.config.bcrypt_cost;
        // The salt from the member's randomness, not the crate's own.
        let salt: [u8; 16] = rand::Rng::random(&mut *self.shared.token_rng());
        cairn_runtime::run_blocking(move || auth::hash_password(&password, cost, salt))
            .await
            .map_err(|_| ServerError::Stopped)?
            .map_err(|e| {
                tracing::error!(error = %e, "bcrypt failed");
                ServerError::Stopped
            })
    }

    pub async fn user_add(
        &self,
        who: &Caller,
        mut req: AuthUserAddRequest,
    ) -> Result<AuthUserAddResponse, ServerError> {
        let no_password = req.options.is_some_and(|o| o.no_password);
        if !no_password {
            req.hashed_password = self
                .hash_new_password(std::mem::take(&mut req.password))
                .await?;
        } else {
            req.password.clear();
            req.hashed_password.clear();
        }
        let rev = self.propose_auth(who, Request::UserAdd(req)).await?;
        Ok(AuthUserAddResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn user_get(
        &self,
        who: &Caller,
        req: AuthUserGetRequest,
    ) -> Result<AuthUserGetResponse, ServerError> {
        let who = who.info.clone();
        let (roles, header) = self
            .auth_read(|a| {
                // A user may read itself.
                if let Err(e) = a.check_admin(who.as_ref()) {
                    if who.as_ref().is_none_or(|w| w.username != req.name) {
                        return Err(e);
                    }
                }
                a.user_roles(&req.name)
            })
            .await?;
        Ok(AuthUserGetResponse {
            header: Some(header),
            roles,
        })
    }

    pub async fn user_list(&self, who: &Caller) -> Result<AuthUserListResponse, ServerError> {
        let who = who.info.clone();
        let (users, header) = self
            .auth_read(|a| {
                a.check_admin(who.as_ref())?;
                Ok(a.users()
                    .map(|u| String::from_utf8_lossy(&u.name).into_owned())
                    .collect())
            })
            .await?;
        Ok(AuthUserListResponse {
            header: Some(header),
            users,
        })
    }

    pub async fn user_delete(
        &self,
        who: &Caller,
        req: AuthUserDeleteRequest,
    ) -> Result<AuthUserDeleteResponse, ServerError> {
        let rev = self.propose_auth(who, Request::UserDelete(req)).await?;
        Ok(AuthUserDeleteResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn user_change_password(
        &self,
        who: &Caller,
        mut req: AuthUserChangePasswordRequest,
    ) -> Result<AuthUserChangePasswordResponse, ServerError> {
        req.hashed_password = self
            .hash_new_password(std::mem::take(&mut req.password))
            .await?;
        let rev = self
            .propose_auth(who, Request::UserChangePassword(req))
            .await?;
        Ok(AuthUserChangePasswordResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn user_grant_role(
        &self,
        who: &Caller,
        req: AuthUserGrantRoleRequest,
    ) -> Result<AuthUserGrantRoleResponse, ServerError> {
        let rev = self.propose_auth(who, Request::UserGrantRole(req)).await?;
        Ok(AuthUserGrantRoleResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn user_revoke_role(
        &self,
        who: &Caller,
        req: AuthUserRevokeRoleRequest,
    ) -> Result<AuthUserRevokeRoleResponse, ServerError> {
        let rev = self.propose_auth(who, Request::UserRevokeRole(req)).await?;
        Ok(AuthUserRevokeRoleResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn role_add(
        &self,
        who: &Caller,
        req: AuthRoleAddRequest,
    ) -> Result<AuthRoleAddResponse, ServerError> {
        let rev = self.propose_auth(who, Request::RoleAdd(req)).await?;
        Ok(AuthRoleAddResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn role_get(
        &self,
        who: &Caller,
        req: AuthRoleGetRequest,
    ) -> Result<AuthRoleGetResponse, ServerError> {
        let who = who.info.clone();
        let (perm, header) = self
            .auth_read(|a| {
                // A user may read the roles it holds.
                if let Err(e) = a.check_admin(who.as_ref()) {
                    if !who
                        .as_ref()
                        .is_some_and(|w| a.has_role(&w.username, &req.role))
                    {
                        return Err(e);
                    }
                }
                a.role_permissions(&req.role)
            })
            .await?;
        Ok(AuthRoleGetResponse {
            header: Some(header),
            perm,
        })
    }

    pub async fn role_list(&self, who: &Caller) -> Result<AuthRoleListResponse, ServerError> {
        let who = who.info.clone();
        let (roles, header) = self
            .auth_read(|a| {
                a.check_admin(who.as_ref())?;
                Ok(a.roles()
                    .map(|r| String::from_utf8_lossy(&r.name).into_owned())
                    .collect())
            })
            .await?;
        Ok(AuthRoleListResponse {
            header: Some(header),
            roles,
        })
    }

    pub async fn role_delete(
        &self,
        who: &Caller,
        req: AuthRoleDeleteRequest,
    ) -> Result<AuthRoleDeleteResponse, ServerError> {
        let rev = self.propose_auth(who, Request::RoleDelete(req)).await?;
        Ok(AuthRoleDeleteResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn role_grant_permission(
        &self,
        who: &Caller,
        req: AuthRoleGrantPermissionRequest,
    ) -> Result<AuthRoleGrantPermissionResponse, ServerError> {
        let rev = self
            .propose_auth(who, Request::RoleGrantPermission(req))
            .await?;
        Ok(AuthRoleGrantPermissionResponse {
            header: Some(self.header(rev)),
        })
    }

    pub async fn role_revoke_permission(
        &self,
        who: &Caller,
        req: AuthRoleRevokePermissionRequest,
    ) -> Result<AuthRoleRevokePermissionResponse, ServerError> {
        let rev = self
            .propose_auth(who, Request::RoleRevokePermission(req))
            .await?;
        Ok(AuthRoleRevokePermissionResponse {
            header: Some(self.header(rev)),
        })
    }
}
