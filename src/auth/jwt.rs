//! etcd's JWT tokens (`--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`):
//! signed, self-contained, checked by any member holding the public key.
//! The claims are etcd's: `username`, `revision` (the auth revision when
//! the token was issued) and `exp` (issue time + `ttl`, Unix seconds). A
//! token names the auth revision it was issued at, so after any auth change
//! its writes are refused `revision of auth store is old` and the client
//! logs in again, as with etcd. A member given only the public key verifies
//! tokens but cannot issue them (etcd's "verify-only key").
//! Tests: `src/auth/tests.rs`, `tests/auth_interop.rs` (a JWT member
//! against etcd 3.4 with the same keys).

use std::time::Duration;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// The member's JWT signer and verifier.
pub struct JwtTokens {
    algorithm: Algorithm,
    sign: Option<EncodingKey>,
    verify: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.sign.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl JwtTokens {
    /// The keys for `sign_method` (etcd's names: RS256…, PS256…, ES256/ES384,
    /// HS256…), as the key files hold them (PEM; for HS*, the private key
    /// file's bytes are the secret). The caller reads the files.
    pub fn new(
        public: &[u8],
        private: Option<&[u8]>,
        sign_method: &str,
        ttl: Duration,
    ) -> Result<JwtTokens, String> {
        let algorithm = match sign_method {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "EdDSA" => Algorithm::EdDSA,
            other => {
                return Err(format!(
                "auth: invalid auth signature method: cairn does not support sign-method {other}"
            ))
            }
        };
        let bad = |what: &str, e: jsonwebtoken::errors::Error| {
            format!("the JWT {what} is not a {sign_method} key: {e}")
        };
        let (sign, verify) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let Some(secret) = private else {
                    return Err("auth: missing key data (HS* needs priv-key, the secret)".into());
                };
                (
                    Some(EncodingKey::from_secret(secret)),
                    DecodingKey::from_secret(secret),
                )
            }
            _ => {
                let verify = match algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(public),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(public),
                    _ => DecodingKey::from_rsa_pem(public),
                }
                .map_err(|e| bad("public key", e))?;
                let sign = match private {
                    Some(private) => Some(
                        match algorithm {
                            Algorithm::ES256 | Algorithm::ES384 => {
                                EncodingKey::from_ec_pem(private)
                            }
                            Algorithm::EdDSA => EncodingKey::from_ed_pem(private),
                            _ => EncodingKey::from_rsa_pem(private),
                        }
                        .map_err(|e| bad("private key", e))?,
                    ),
                    None => None,
                };
                (sign, verify)
            }
        };
        let tokens = JwtTokens {
            algorithm,
            sign,
            verify,
            ttl,
        };
        // The two keys must belong together (etcd: "public and private keys
        // don't match"): a token signed with one verifies with the other.
        if tokens.sign.is_some() {
            // Any time will do: the probe is checked at the time it names.
            let at = Duration::from_secs(1);
            let probe = tokens
                .issue("cairn-key-check", 1, at)
                .map_err(|e| e.to_string())?;
            if tokens.check(&probe, at).is_none() {
                return Err("auth: public and private keys don't match".into());
            }
        }
        Ok(tokens)
    }

    /// A token for `user` at auth `revision`, issued at `now` (since the
    /// Unix epoch, from the member's clock); `Err` on a verify-only member.
    pub fn issue(
        &self,
        user: &str,
        revision: u64,
        now: Duration,
    ) -> Result<String, super::AuthError> {
        let Some(key) = &self.sign else {
            return Err(super::AuthError::VerifyOnly);
        };
        let claims = Claims {
            username: user.to_owned(),
            revision,
            exp: (now + self.ttl).as_secs(),
        };
        encode(&Header::new(self.algorithm), &claims, key).map_err(|e| {
            tracing::error!(error = %e, "signing a JWT failed");
            super::AuthError::VerifyOnly
        })
    }

    /// The user and auth revision of a token validly signed and not
    /// expired at `now` (since the Unix epoch, from the member's clock).
    pub fn check(&self, token: &str, now: Duration) -> Option<(String, u64)> {
        let mut validation = Validation::new(self.algorithm);
        // The expiry is checked here, on the member's clock, not the OS's.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        let data = decode::<Claims>(token, &self.verify, &validation).ok()?;
        (data.claims.exp >= now.as_secs()).then_some((data.claims.username, data.claims.revision))
    }
}
