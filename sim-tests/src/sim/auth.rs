//! The auth workload (`auth3`): an operator changes the auth state under the
//! faults while users read and write beside the KV clients.
//!
//! - The operator (root) sets up users `u1..u3` holding roles `r1..r3`
//!   (each allowed to read and write the whole workload at first), then
//!   turns auth on, then every 0.1–0.6 s enables or disables auth, grants or revokes a range
//!   permission (one key, a range, or open-ended over `/a/k0..k9`), grants
//!   or revokes a role, changes a user's password, adds or deletes a role.
//!   It logs in again whenever its token is void. At the end it turns auth
//!   off (so the KV clients' final phase can write).
//! - KV clients 1–3 are the users `u1..u3` (`Client::as_user`): they log in
//!   with the password the operator last set, and again when told their
//!   token is void; the fourth has no credentials. Their whole mix (over
//!   `k0..k9`, `l0..l3`, the keys the permissions name) is recorded and
//!   checked as in `kv3`; an auth refusal is a failed operation (no effect).
//! What must hold of the auth decisions is checked on the committed log by
//! `checker::auth`.
//! Tests: the `auth3` scenario (`tests/sim.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::authpb::{permission::Type as PermType, Permission};
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::*;
use rand::rngs::StdRng;
use rand::Rng;

use super::workload::Endpoints;

const ROOT_PASSWORD: &str = "rootpw";
pub const USERS: usize = 3;
const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// The users' current passwords, as the operator last set them.
#[derive(Default)]
pub struct Passwords(Mutex<BTreeMap<String, String>>);

impl Passwords {
    pub fn get(&self, user: &str) -> Option<String> {
        self.0.lock().expect("passwords lock").get(user).cloned()
    }

    fn set(&self, user: &str, password: String) {
        self.0
            .lock()
            .expect("passwords lock")
            .insert(user.to_owned(), password);
    }
}

/// What the auth workload did.
#[derive(Debug, Default, Clone)]
pub struct AuthReport {
    pub changes_ok: u64,
    pub changes_failed: u64,
    pub logins: u64,
    /// The operator turned auth off at the end.
    pub disabled_at_end: bool,
}

/// The keys permissions name, in order: `k0..k9` (KV mix), `l0..l3`
/// (lists), `x0..x9` (never written: the prober's range deletes there
/// change nothing when permitted).
fn keys() -> Vec<Vec<u8>> {
    let kv = (0..super::workload::KV_KEYS).map(|i| format!("k{i}"));
    let lists = (0..super::workload::LIST_KEYS).map(|i| format!("l{i}"));
    kv.chain(lists)
        .chain(probe_keys())
        .map(String::into_bytes)
        .collect()
}

fn probe_keys() -> impl Iterator<Item = String> {
    (0..10).map(|i| format!("x{i}"))
}

fn request<T>(msg: T, token: &Option<String>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token.as_ref().and_then(|t| t.parse().ok()) {
        r.metadata_mut().insert("token", t);
    }
    r.set_timeout(CALL_DEADLINE);
    r
}

/// A call's outcome: Ok, or the status message.
async fn within<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_DEADLINE, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(s.message().to_owned()),
        Err(_) => Err("deadline".to_owned()),
    }
}

async fn auth_client(url: &str) -> Option<AuthClient<tonic::transport::Channel>> {
    tokio::time::timeout(CALL_DEADLINE, AuthClient::connect(url.to_owned()))
        .await
        .ok()?
        .ok()
}

/// Whether an error says the token must be dropped.
fn token_void(msg: &str) -> bool {
    msg.contains("invalid auth token") || msg.contains("revision of auth store is old")
}

/// Logs in; `Ok(None)` when auth is off (no token needed).
pub async fn login(url: &str, user: &str, password: &str) -> Result<Option<String>, String> {
    let mut c = auth_client(url).await.ok_or("connect")?;
    match within(c.authenticate(AuthenticateRequest {
        name: user.into(),
        password: password.into(),
    }))
    .await
    {
        Ok(r) => Ok(Some(r.token)),
        Err(m) if m.contains("authentication is not enabled") => Ok(None),
        Err(m) => Err(m),
    }
}

fn random_perm(rng: &mut StdRng) -> Permission {
    let keys = keys();
    let i = rng.random_range(0..keys.len());
    let range_end = match rng.random_range(0..3) {
        0 => Vec::new(),
        1 => vec![0],
        // A later key, or past the last one.
        _ => keys
            .get(rng.random_range(i + 1..=keys.len()))
            .cloned()
            .unwrap_or_else(|| b"m".to_vec()),
    };
    let perm_type = match rng.random_range(0..3) {
        0 => PermType::Read,
        1 => PermType::Write,
        _ => PermType::Readwrite,
    };
    Permission {
        perm_type: perm_type as i32,
        key: keys[i].clone(),
        range_end,
    }
}

/// One auth change as root; `Err` is the status message.
async fn change(
    url: &str,
    token: &Option<String>,
    rng: &mut StdRng,
    passwords: &Passwords,
) -> Result<(), String> {
    let mut c = auth_client(url).await.ok_or("connect")?;
    let user = format!("u{}", rng.random_range(1..=USERS));
    let role = format!("r{}", rng.random_range(1..=USERS));
    let t = token;
    match rng.random_range(0..100) {
        0..=13 => within(c.auth_enable(request(AuthEnableRequest {}, t)))
            .await
            .map(drop),
        14..=17 => within(c.auth_disable(request(AuthDisableRequest {}, t)))
            .await
            .map(drop),
        18..=42 => {
            let req = AuthRoleGrantPermissionRequest {
                name: role,
                perm: Some(random_perm(rng)),
            };
            within(c.role_grant_permission(request(req, t)))
                .await
                .map(drop)
        }
        43..=54 => {
            // Revoke one the role has, if any (asked of the cluster).
            let perms = within(c.role_get(request(AuthRoleGetRequest { role: role.clone() }, t)))
                .await?
                .perm;
            let Some(p) = perms.get(rng.random_range(0..perms.len().max(1))) else {
                return Ok(());
            };
            let req = AuthRoleRevokePermissionRequest {
                role,
                key: p.key.clone(),
                range_end: p.range_end.clone(),
            };
            within(c.role_revoke_permission(request(req, t)))
                .await
                .map(drop)
        }
        55..=69 => {
            let req = AuthUserGrantRoleRequest { user, role };
            within(c.user_grant_role(request(req, t))).await.map(drop)
        }
        70..=79 => {
            let req = AuthUserRevokeRoleRequest { name: user, role };
            within(c.user_revoke_role(request(req, t))).await.map(drop)
        }
        80..=89 => {
            let password = format!("{user}pw-{}", rng.random_range(0..1000));
            let req = AuthUserChangePasswordRequest {
                name: user.clone(),
                password: password.clone(),
                ..Default::default()
            };
            let r = within(c.user_change_password(request(req, t))).await;
            if r.is_ok() {
                passwords.set(&user, password);
            }
            r.map(drop)
        }
        90..=94 => within(c.role_delete(request(AuthRoleDeleteRequest { role }, t)))
            .await
            .map(drop),
        _ => within(c.role_add(request(AuthRoleAddRequest { name: role }, t)))
            .await
            .map(drop),
    }
}

/// The operator: set-up, then random changes until `stop`, then auth off.
pub async fn run_operator(
    urls: Endpoints,
    mut rng: StdRng,
    passwords: Arc<Passwords>,
    stop: Arc<AtomicBool>,
) -> AuthReport {
    let mut report = AuthReport::default();
    // Set-up (auth is off): retried until each step is done.
    let mut setup: Vec<(String, u8)> = vec![("root".into(), 0), ("root".into(), 1)];
    for i in 1..=USERS {
        setup.push((format!("u{i}"), 0));
        setup.push((format!("r{i}"), 2));
        setup.push((format!("{i}"), 3));
    }
    // Stopped before the setup is done (a schedule of crashes can outlast
    // the fault phase): straight to turning auth off — an enable whose
    // answer was lost may have taken effect, and the clients' final phase
    // needs auth off either way.
    'setup: for (name, what) in setup {
        loop {
            if stop.load(Ordering::SeqCst) {
                break 'setup;
            }
            let url = urls.pick(&mut rng);
            let Some(mut c) = auth_client(&url).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let r = match what {
                0 => {
                    let password = if name == "root" {
                        ROOT_PASSWORD.to_owned()
                    } else {
                        format!("{name}pw")
                    };
                    let r = within(c.user_add(AuthUserAddRequest {
                        name: name.clone(),
                        password: password.clone(),
                        ..Default::default()
                    }))
                    .await;
                    if name != "root" {
                        passwords.set(&name, password);
                    }
                    r.map(drop)
                }
                1 => within(c.user_grant_role(AuthUserGrantRoleRequest {
                    user: "root".into(),
                    role: "root".into(),
                }))
                .await
                .map(drop),
                2 => within(c.role_add(AuthRoleAddRequest { name: name.clone() }))
                    .await
                    .map(drop),
                // User i holds role i, which may read and write every key
                // of the workload at first (the changes take that apart).
                _ => {
                    let grant = AuthRoleGrantPermissionRequest {
                        name: format!("r{name}"),
                        perm: Some(Permission {
                            perm_type: PermType::Readwrite as i32,
                            key: b"k".to_vec(),
                            range_end: b"m".to_vec(),
                        }),
                    };
                    let role = AuthUserGrantRoleRequest {
                        user: format!("u{name}"),
                        role: format!("r{name}"),
                    };
                    match within(c.role_grant_permission(grant)).await {
                        Ok(_) => within(c.user_grant_role(role)).await.map(drop),
                        Err(e) => Err(e),
                    }
                }
            };
            match r {
                Ok(()) => break,
                // A retry of a step that took effect.
                Err(m) if m.contains("already exists") => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    // Auth on from the start (the changes below turn it off now and then).
    while !stop.load(Ordering::SeqCst) {
        let url = urls.pick(&mut rng);
        if let Some(mut c) = auth_client(&url).await {
            if within(c.auth_enable(AuthEnableRequest {})).await.is_ok() {
                break;
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut token: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        let url = urls.pick(&mut rng);
        match change(&url, &token, &mut rng, &passwords).await {
            Ok(()) => report.changes_ok += 1,
            Err(m) => {
                report.changes_failed += 1;
                if token_void(&m) || m.contains("user name is empty") {
                    report.logins += 1;
                    token = login(&url, "root", ROOT_PASSWORD).await.ok().flatten();
                }
            }
        }
    }
    // Auth off for the final phase (the cluster is healed by now).
    for _ in 0..60 {
        let url = urls.pick(&mut rng);
        let tok = login(&url, "root", ROOT_PASSWORD).await;
        let Ok(tok) = tok else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if let Some(mut c) = auth_client(&url).await {
            if within(c.auth_disable(request(AuthDisableRequest {}, &tok)))
                .await
                .is_ok()
            {
                report.disabled_at_end = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report
}

/// The range prober: as `u1..u3` in turn, range deletes and txns over the
/// never-written `x…` keys (points, ranges, inverted ranges, open-ended),
/// with and without `prev_kv`. Permitted, they change nothing (no key is
/// there); refused, they are refusals the auth checker must agree with.
pub async fn run_prober(
    urls: Endpoints,
    mut rng: StdRng,
    passwords: Arc<Passwords>,
    stop: Arc<AtomicBool>,
) -> AuthReport {
    let mut report = AuthReport::default();
    let mut tokens: BTreeMap<String, Option<String>> = BTreeMap::new();
    let probe: Vec<Vec<u8>> = probe_keys().map(String::into_bytes).collect();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        let url = urls.pick(&mut rng);
        let user = format!("u{}", rng.random_range(1..=USERS));
        if !tokens.contains_key(&user) {
            let Some(password) = passwords.get(&user) else {
                continue;
            };
            report.logins += 1;
            match login(&url, &user, &password).await {
                Ok(t) => {
                    tokens.insert(user.clone(), t);
                }
                Err(_) => continue,
            }
        }
        let token = tokens.get(&user).cloned().flatten();
        let Ok(Ok(mut kv)) = tokio::time::timeout(
            CALL_DEADLINE,
            cairn_proto::etcdserverpb::kv_client::KvClient::connect(url.clone()),
        )
        .await
        else {
            continue;
        };
        let i = rng.random_range(0..probe.len());
        let range_end = match rng.random_range(0..4) {
            0 => Vec::new(),
            1 => vec![0],
            // Any other probe key: a range, or an inverted one.
            _ => probe[rng.random_range(0..probe.len())].clone(),
        };
        let delete = DeleteRangeRequest {
            key: probe[i].clone(),
            range_end: range_end.clone(),
            prev_kv: rng.random_bool(0.3),
        };
        let result = if rng.random_bool(0.5) {
            within(kv.delete_range(request(delete, &token)))
                .await
                .map(drop)
        } else {
            let txn = TxnRequest {
                compare: vec![Compare {
                    key: probe[rng.random_range(0..probe.len())].clone(),
                    range_end: if rng.random_bool(0.5) {
                        vec![0]
                    } else {
                        Vec::new()
                    },
                    target: compare::CompareTarget::Version as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::Version(0)),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(delete)),
                }],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: probe[i].clone(),
                        range_end,
                        ..Default::default()
                    })),
                }],
            };
            within(kv.txn(request(txn, &token))).await.map(drop)
        };
        match result {
            Ok(()) => report.changes_ok += 1,
            Err(m) => {
                report.changes_failed += 1;
                if token_void(&m) || m.contains("user name is empty") {
                    tokens.remove(&user);
                }
            }
        }
    }
    report
}
