//! TLS for the client and peer ports, with rustls on *ring*, as etcd does it.
//!
//! - [`TlsInfo`] is one side's settings (etcd's `transport.TLSInfo`): a
//!   certificate and key, an optional CA bundle to verify the other end
//!   with, whether clients must present a certificate, and the TLS 1.2
//!   cipher suites by their Go names ([`check_cipher_suites`]).
//! - [`ServerTls`] accepts connections on a listener. Its files are read once
//!   when it is made (a bad file is a startup error, never a panic) and
//!   again whenever one of them changes on disk: each new handshake compares
//!   the files' modification time, size and inode with those last loaded and
//!   rebuilds the rustls configuration if any differs, so certificates rotate
//!   without a restart. A rotation that leaves unreadable files keeps the
//!   previous configuration (logged) and tries again on the next handshake.
//! - [`Dialer`] opens gRPC channels to peer or client URLs: plain for
//!   `http://`, TLS for `https://` with the same reloading, presenting the
//!   certificate as a client certificate when the server asks for one.
//! - [`self_cert`] makes the self-signed certificate of `--auto-tls` /
//!   `--peer-auto-tls`, under `<data-dir>/fixtures/{client,peer}` as etcd
//!   does; clients of a self-signed member do not verify its certificate
//!   (etcd's `InsecureSkipVerify` for self-signed certificates).
//! - [`client_cert_common_name`] gives a gRPC handler the Common Name of the
//!   verified client certificate (`--client-cert-auth`).
//!
//! The simulated network has no TLS: under `--cfg madsim` the same types
//! exist so the server compiles unchanged, but none can be made with TLS
//! (`ServerTls::new` and `Dialer::tls` fail, `client_cert_common_name` is
//! always `None`).
//! Tests: the unit tests at the bottom (certificates made with rcgen), and
//! `tests/tls.rs` of the root package (the binary with etcdctl, curl and the
//! `etcd-client` crate).

use std::path::{Path, PathBuf};

/// One side's TLS settings (client port or peer port), as etcd's `TLSInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// PEM certificate chain this member presents (as server and as client).
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle that verifies the other end: client certificates on the
    /// server side, server certificates when dialing.
    pub trusted_ca_file: Option<PathBuf>,
    /// Clients must present a certificate signed by `trusted_ca_file`.
    pub client_cert_auth: bool,
    /// The certificate is self-signed (`--auto-tls`): when dialing, the
    /// server's certificate is not verified, as etcd does for its own
    /// self-signed certificates.
    pub self_signed: bool,
    /// TLS cipher suites by Go's names; empty means rustls's defaults.
    /// Checked by [`check_cipher_suites`].
    pub cipher_suites: Vec<String>,
    /// When dialing: the name the server's certificate must carry (and
    /// the SNI sent) instead of the URL's host — etcdctl's `ServerName`,
    /// the domain of a secure `--discovery-srv`.
    pub server_name: Option<String>,
}

/// The rustls cipher suites a Go name can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    EcdheEcdsaAes128Gcm,
    EcdheEcdsaAes256Gcm,
    EcdheEcdsaChacha20,
    EcdheRsaAes128Gcm,
    EcdheRsaAes256Gcm,
    EcdheRsaChacha20,
    Tls13Aes128Gcm,
    Tls13Aes256Gcm,
    Tls13Chacha20,
}

/// Every cipher suite name Go's `crypto/tls` knows (which etcd accepts for
/// `--cipher-suites`), with the rustls suite it maps to; `None` for the
/// suites rustls does not implement (CBC, RC4, 3DES, static RSA key exchange).
const GO_CIPHER_SUITES: &[(&str, Option<Suite>)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        Some(Suite::EcdheEcdsaAes128Gcm),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        Some(Suite::EcdheEcdsaAes256Gcm),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(Suite::EcdheEcdsaChacha20),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        Some(Suite::EcdheEcdsaChacha20),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        Some(Suite::EcdheRsaAes128Gcm),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        Some(Suite::EcdheRsaAes256Gcm),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(Suite::EcdheRsaChacha20),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        Some(Suite::EcdheRsaChacha20),
    ),
    ("TLS_AES_128_GCM_SHA256", Some(Suite::Tls13Aes128Gcm)),
    ("TLS_AES_256_GCM_SHA384", Some(Suite::Tls13Aes256Gcm)),
    ("TLS_CHACHA20_POLY1305_SHA256", Some(Suite::Tls13Chacha20)),
    ("TLS_RSA_WITH_RC4_128_SHA", None),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", None),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", None),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", None),
    ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", None),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", None),
    ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", None),
];

/// The Go names cairn can serve with (for error messages and docs).
pub fn supported_cipher_suites() -> Vec<&'static str> {
    GO_CIPHER_SUITES
        .iter()
        .filter(|(_, s)| s.is_some())
        .map(|(n, _)| *n)
        .collect()
}

/// Checks `--cipher-suites`: a name Go does not know is refused in etcd's
/// words (`unexpected TLS cipher suite "X"`); one Go knows but rustls does
/// not implement is refused saying so.
pub fn check_cipher_suites(names: &[String]) -> Result<(), String> {
    names.iter().try_for_each(|n| suite_of(n).map(|_| ()))
}

fn suite_of(name: &str) -> Result<Suite, String> {
    match GO_CIPHER_SUITES.iter().find(|(n, _)| *n == name) {
        None => Err(format!("unexpected TLS cipher suite {name:?}")),
        Some((_, Some(suite))) => Ok(*suite),
        Some((_, None)) => Err(format!(
            "TLS cipher suite {name:?} is not supported by cairn (rustls has no CBC, RC4, 3DES \
             or static-RSA suites); supported: {}",
            supported_cipher_suites().join(",")
        )),
    }
}

/// The Common Name of the client certificate verified on the connection
/// `req` came in on; `None` without one (no `--client-cert-auth`, a plain
/// connection, or a certificate without a CN), and always under madsim.
pub fn client_cert_common_name<T>(req: &tonic::Request<T>) -> Option<String> {
    #[cfg(not(madsim))]
    {
        req.extensions()
            .get::<imp::TlsConnInfo>()
            .and_then(|i| i.common_name.clone())
    }
    #[cfg(madsim)]
    {
        let _ = req;
        None
    }
}

/// Where `--auto-tls` (`side` = `"client"`) or `--peer-auto-tls` (`"peer"`)
/// keeps its certificate: `<data-dir>/fixtures/<side>`, as etcd.
pub fn self_cert_dir(data_dir: &Path, side: &str) -> PathBuf {
    data_dir.join("fixtures").join(side)
}

#[cfg(not(madsim))]
mod imp;
#[cfg(not(madsim))]
pub(crate) use imp::HANDSHAKE_TIMEOUT;
#[cfg(not(madsim))]
pub use imp::{self_cert, Dialer, ServerTls, TlsConn, TlsConnInfo};

#[cfg(madsim)]
mod sim {
    //! The simulated world's stand-ins: nothing can be made with TLS.
    use super::TlsInfo;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    const NO_TLS: &str = "TLS is not available in a simulation build";

    /// Never made under madsim.
    #[derive(Debug, Clone)]
    pub struct ServerTls(());

    impl ServerTls {
        pub fn new(_info: &TlsInfo) -> Result<ServerTls, String> {
            Err(NO_TLS.to_owned())
        }

        pub fn new_peer(_info: &TlsInfo) -> Result<ServerTls, String> {
            Err(NO_TLS.to_owned())
        }
    }

    /// Dials plain gRPC only.
    #[derive(Debug, Clone, Default)]
    pub struct Dialer(());

    impl Dialer {
        pub fn plain() -> Dialer {
            Dialer(())
        }

        pub fn peer(_info: &TlsInfo) -> Result<Dialer, String> {
            Err(NO_TLS.to_owned())
        }

        pub fn client(_info: &TlsInfo) -> Result<Dialer, String> {
            Err(NO_TLS.to_owned())
        }

        pub fn command_line(_info: &TlsInfo) -> Result<Dialer, String> {
            Err(NO_TLS.to_owned())
        }

        pub async fn connect_tuned(
            &self,
            url: &str,
            connect_timeout: Duration,
            tune: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
        ) -> Result<tonic::transport::Channel, String> {
            tune(
                tonic::transport::Endpoint::from_shared(url.to_owned())
                    .map_err(|e| format!("invalid url {url}: {e}"))?
                    .connect_timeout(connect_timeout),
            )
            .connect()
            .await
            .map_err(|e| e.to_string())
        }

        pub fn lazy_channel(
            &self,
            url: &str,
            connect_timeout: Duration,
        ) -> Result<tonic::transport::Channel, String> {
            Ok(tonic::transport::Endpoint::from_shared(url.to_owned())
                .map_err(|e| format!("invalid url {url}: {e}"))?
                .connect_timeout(connect_timeout)
                .connect_lazy())
        }

        pub async fn connect(
            &self,
            url: &str,
            connect_timeout: Duration,
        ) -> Result<tonic::transport::Channel, String> {
            tonic::transport::Endpoint::from_shared(url.to_owned())
                .map_err(|e| format!("invalid url {url}: {e}"))?
                .connect_timeout(connect_timeout)
                .connect()
                .await
                .map_err(|e| e.to_string())
        }
    }

    pub fn self_cert(_dir: &Path, _hosts: &[String]) -> Result<(PathBuf, PathBuf), String> {
        Err(NO_TLS.to_owned())
    }
}
#[cfg(madsim)]
pub use sim::{self_cert, Dialer, ServerTls};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suite_names_are_checked_as_etcd_does() {
        let ok = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()];
        assert_eq!(check_cipher_suites(&ok), Ok(()));
        let unknown = vec!["FOO".to_owned()];
        assert_eq!(
            check_cipher_suites(&unknown),
            Err("unexpected TLS cipher suite \"FOO\"".to_owned())
        );
        let cbc = vec!["TLS_RSA_WITH_AES_128_CBC_SHA".to_owned()];
        let e = check_cipher_suites(&cbc).expect_err("rustls has no CBC suites");
        assert!(
            e.starts_with("TLS cipher suite \"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported"),
            "{e}"
        );
        assert!(supported_cipher_suites().contains(&"TLS_AES_128_GCM_SHA256"));
    }
}
