//! etcd's simple tokens (`--auth-token simple`): member-local, in memory,
//! never persisted. A login whose password checked out is proposed through
//! Raft with a random 16-letter prefix; every member applies it by recording
//! the token `<prefix>.<entry index>` for the user, so any member accepts
//! it once it has applied that entry. A token lapses after `ttl` without
//! use (etcd's `--auth-token-ttl`), when its user is deleted or changes
//! password, and when auth is turned off; a restarted member knows none
//! (clients log in again on `invalid auth token`, as with etcd).
//! Tests: `src/auth/tests.rs`, `tests/auth_interop.rs`.

use std::collections::HashMap;
use std::time::Duration;

use cairn_runtime::MonoTime;
use rand::Rng;

use super::TokenEffect;

/// etcd's default token TTL (`--auth-token-ttl`, 300 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The length of a token's random prefix.
const PREFIX_LEN: usize = 16;
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A fresh random token prefix.
pub fn gen_prefix(rng: &mut impl Rng) -> String {
    (0..PREFIX_LEN)
        .map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())]))
        .collect()
}

/// The entry index a simple token names (`None`: not a simple token).
pub fn token_index(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.is_empty() || index.contains('.') {
        return None;
    }
    index.parse().ok()
}

/// The member's table of live simple tokens.
#[derive(Debug)]
pub struct SimpleTokens {
    ttl: Duration,
    /// Tokens are only kept while auth is on.
    enabled: bool,
    /// token → (user, last use).
    tokens: HashMap<String, (String, MonoTime)>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration, enabled: bool) -> SimpleTokens {
        SimpleTokens {
            ttl: if ttl.is_zero() { DEFAULT_TTL } else { ttl },
            enabled,
            tokens: HashMap::new(),
        }
    }

    /// Records the token of an applied login; returns it.
    pub fn assign(&mut self, prefix: &str, index: u64, user: &str, now: MonoTime) -> String {
        let token = format!("{prefix}.{index}");
        if self.enabled {
            self.expire(now);
            self.tokens.insert(token.clone(), (user.to_owned(), now));
        }
        token
    }

    /// The user of a live token, renewing its TTL.
    pub fn user_of(&mut self, token: &str, now: MonoTime) -> Option<String> {
        let ttl = self.ttl;
        let (user, last) = self.tokens.get_mut(token)?;
        if now.saturating_duration_since(*last) > ttl {
            self.tokens.remove(token);
            return None;
        }
        *last = now;
        Some(user.clone())
    }

    /// Follows an applied auth change.
    pub fn apply(&mut self, effect: &TokenEffect) {
        match effect {
            TokenEffect::None => {}
            TokenEffect::Enabled => self.enabled = true,
            TokenEffect::Disabled => {
                self.enabled = false;
                self.tokens.clear();
            }
            TokenEffect::InvalidateUser(name) => self.tokens.retain(|_, (u, _)| u != name),
        }
    }

    /// Forgets every token (a state snapshot replaced the auth state).
    pub fn reset(&mut self, enabled: bool) {
        self.enabled = enabled;
        self.tokens.clear();
    }

    fn expire(&mut self, now: MonoTime) {
        let ttl = self.ttl;
        self.tokens
            .retain(|_, (_, last)| now.saturating_duration_since(*last) <= ttl);
    }
}
