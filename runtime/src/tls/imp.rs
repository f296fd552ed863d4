//! The tokio world's TLS: rustls configurations built from PEM files and
//! rebuilt when the files change, the server's accepted connections, and the
//! client connector tonic dials through. See the parent module's header.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{suite_of, Suite, TlsInfo};

/// How long a client has to finish its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// ---- building configurations from files ----

impl Suite {
    fn rustls(self) -> rustls::SupportedCipherSuite {
        use rustls::crypto::ring::cipher_suite as cs;
        match self {
            Suite::EcdheEcdsaAes128Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            Suite::EcdheEcdsaAes256Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            Suite::EcdheEcdsaChacha20 => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            Suite::EcdheRsaAes128Gcm => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            Suite::EcdheRsaAes256Gcm => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            Suite::EcdheRsaChacha20 => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            Suite::Tls13Aes128Gcm => cs::TLS13_AES_128_GCM_SHA256,
            Suite::Tls13Aes256Gcm => cs::TLS13_AES_256_GCM_SHA384,
            Suite::Tls13Chacha20 => cs::TLS13_CHACHA20_POLY1305_SHA256,
        }
    }
}

/// *ring*'s provider, its cipher suites narrowed to `names` (Go's names).
/// As in Go, the list governs TLS 1.2; TLS 1.3's suites stay enabled unless
/// the list names some of them.
fn provider(names: &[String]) -> Result<Arc<CryptoProvider>, String> {
    // Deprecated only for lacking post-quantum key exchange, which needs
    // aws-lc (and cmake); *ring* is the provider chosen for the build.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if !names.is_empty() {
        let wanted: Vec<rustls::CipherSuite> = names
            .iter()
            .map(|n| suite_of(n).map(|s| s.rustls().suite()))
            .collect::<Result<_, _>>()?;
        let names_tls13 = provider
            .cipher_suites
            .iter()
            .any(|cs| cs.tls13().is_some() && wanted.contains(&cs.suite()));
        provider
            .cipher_suites
            .retain(|cs| wanted.contains(&cs.suite()) || (cs.tls13().is_some() && !names_tls13));
    }
    Ok(Arc::new(provider))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// The certificates of a PEM file (`what` names the flag in errors).
fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: tls: failed to find any PEM data in certificate input",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{what} {}: tls: failed to find any PEM data in key input",
            path.display()
        ),
        e => format!("{what} {}: bad private key: {e}", path.display()),
    })
}

fn load_roots(path: &Path, what: &str) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: bad CA certificate: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The certificate and key of `info`, checked to belong together.
fn load_identity(
    info: &TlsInfo,
    flags: &Flags,
    provider: &CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = load_certs(&info.cert_file, flags.cert)?;
    let key = load_key(&info.key_file, flags.key)?;
    rustls::sign::CertifiedKey::from_der(certs.clone(), key.clone_key(), provider).map_err(
        |e| {
            format!(
                "{} {} and {} {} do not make a usable key pair: {e}",
                flags.cert,
                info.cert_file.display(),
                flags.key,
                info.key_file.display()
            )
        },
    )?;
    Ok((certs, key))
}

/// The flag names of one side, for error messages.
struct Flags {
    cert: &'static str,
    key: &'static str,
    ca: &'static str,
}

const CLIENT_FLAGS: Flags = Flags {
    cert: "--cert-file",
    key: "--key-file",
    ca: "--trusted-ca-file",
};
const PEER_FLAGS: Flags = Flags {
    cert: "--peer-cert-file",
    key: "--peer-key-file",
    ca: "--peer-trusted-ca-file",
};

/// What identifies a file's version: modification time, size, inode. A
/// rotation by rename or by rewrite in place changes at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(std::time::SystemTime, u64, u64)>);

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    Stamp(
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))),
    )
}

fn stamps(info: &TlsInfo) -> Vec<Stamp> {
    let mut files = vec![stamp(&info.cert_file), stamp(&info.key_file)];
    if let Some(ca) = &info.trusted_ca_file {
        files.push(stamp(ca));
    }
    files
}

/// A configuration built from files, rebuilt when they change.
struct Reloading<C> {
    info: TlsInfo,
    build: fn(&TlsInfo) -> Result<C, String>,
    current: Mutex<(Vec<Stamp>, Arc<C>)>,
}

impl<C> Reloading<C> {
    fn new(info: TlsInfo, build: fn(&TlsInfo) -> Result<C, String>) -> Result<Self, String> {
        let before = stamps(&info);
        let config = build(&info)?;
        Ok(Reloading {
            info,
            build,
            current: Mutex::new((before, Arc::new(config))),
        })
    }

    /// The configuration for a new connection: rebuilt first if a file
    /// changed since it was built; if the new files do not load, the last
    /// good configuration (and the rebuild is tried on the next call).
    fn get(&self) -> Arc<C> {
        let now = stamps(&self.info);
        let mut current = self.current.lock().expect("TLS config lock poisoned");
        if current.0 != now {
            match (self.build)(&self.info) {
                Ok(config) => {
                    tracing::info!(cert = %self.info.cert_file.display(), "TLS certificate files changed; reloaded");
                    *current = (now, Arc::new(config));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the previous ones")
                }
            }
        }
        current.1.clone()
    }
}

// ---- the server side ----

/// The server side of one port's TLS (see the module header).
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Reloading<ServerConfig>>,
    client_cert_auth: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("info", &self.inner.info)
            .finish()
    }
}

impl ServerTls {
    /// The client port's TLS; errors name the flags (`--cert-file`, …).
    pub fn new(info: &TlsInfo) -> Result<ServerTls, String> {
        Self::with_builder(info, build_client_port_config)
    }

    /// The peer port's TLS; errors name the `--peer-*` flags.
    pub fn new_peer(info: &TlsInfo) -> Result<ServerTls, String> {
        Self::with_builder(info, build_peer_port_config)
    }

    fn with_builder(
        info: &TlsInfo,
        build: fn(&TlsInfo) -> Result<ServerConfig, String>,
    ) -> Result<ServerTls, String> {
        Ok(ServerTls {
            inner: Arc::new(Reloading::new(info.clone(), build)?),
            client_cert_auth: info.client_cert_auth,
        })
    }

    /// Runs the server handshake on `stream` (under `HANDSHAKE_TIMEOUT`).
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.inner.get());
        match crate::timer::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Err(_) => Err("TLS handshake timed out".to_owned()),
            Ok(r) => r.map_err(|e| format!("TLS handshake failed: {e}")),
        }
    }

    /// The connection info a handler sees: the verified client
    /// certificate's Common Name when clients must present one.
    pub(crate) fn conn_info(
        &self,
        stream: &tokio_rustls::server::TlsStream<TcpStream>,
    ) -> TlsConnInfo {
        let (tcp, conn) = stream.get_ref();
        let common_name = match self.client_cert_auth {
            true => conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| common_name(c.as_ref())),
            false => None,
        };
        TlsConnInfo {
            remote_addr: tcp.peer_addr().ok(),
            common_name,
        }
    }
}

fn build_client_port_config(info: &TlsInfo) -> Result<ServerConfig, String> {
    build_server_config(info, &CLIENT_FLAGS, &[b"http/1.1", b"h2"])
}

fn build_peer_port_config(info: &TlsInfo) -> Result<ServerConfig, String> {
    build_server_config(info, &PEER_FLAGS, &[b"h2"])
}

/// A server configuration: the certificate, client verification when
/// `client_cert_auth`, and ALPN `alpn` in order of preference. The client
/// port prefers HTTP/1.1 so that a client offering both (curl) reads
/// `/health` over HTTP/1.1; gRPC clients offer only h2.
fn build_server_config(
    info: &TlsInfo,
    flags: &Flags,
    alpn: &[&[u8]],
) -> Result<ServerConfig, String> {
    let provider = provider(&info.cipher_suites)?;
    let (certs, key) = load_identity(info, flags, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (&info.trusted_ca_file, info.client_cert_auth) {
        (Some(ca), true) => {
            let roots = load_roots(ca, flags.ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("{} {}: {e}", flags.ca, ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, true) => {
            return Err(format!(
            "client certificate authentication needs {} (cairn does not use the system's CA store)",
            flags.ca
        ))
        }
        (_, false) => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} {}: {e}", flags.cert, info.cert_file.display()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// What tonic puts in each request's extensions for a connection accepted
/// over TLS (`client_cert_common_name` reads it).
#[derive(Debug, Clone)]
pub struct TlsConnInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The verified client certificate's CN (only with client-cert auth).
    pub common_name: Option<String>,
}

/// An accepted TLS connection with bytes already read from it put back in
/// front (the client port reads the first bytes to tell gRPC from HTTP).
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    prefix: Vec<u8>,
    info: TlsConnInfo,
}

impl TlsConn {
    pub(crate) fn new(
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        prefix: Vec<u8>,
        info: TlsConnInfo,
    ) -> TlsConn {
        TlsConn {
            stream,
            prefix,
            info,
        }
    }

    /// The ALPN protocol the handshake agreed on.
    pub(crate) fn alpn(stream: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<Vec<u8>> {
        stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnInfo;

    fn connect_info(&self) -> TlsConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

// ---- the client side ----

/// Opens gRPC channels to member URLs: plain for `http://`, TLS for
/// `https://` (see the module header). Cheap to clone.
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<Arc<Reloading<ClientConfig>>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tls {
            None => f.write_str("Dialer(plain)"),
            Some(t) => write!(f, "Dialer(tls, {:?})", t.info),
        }
    }
}

impl Dialer {
    /// A dialer without TLS: `https://` URLs fail.
    pub fn plain() -> Dialer {
        Dialer { tls: None }
    }

    /// A dialer for peer URLs with the peer port's settings (errors name the
    /// `--peer-*` flags): it verifies servers with `info.trusted_ca_file` (or
    /// not at all when `info.self_signed`) and presents `info`'s certificate
    /// when the server asks for a client certificate.
    pub fn peer(info: &TlsInfo) -> Result<Dialer, String> {
        Ok(Dialer {
            tls: Some(Arc::new(Reloading::new(info.clone(), |i| {
                build_client_config(i, &PEER_FLAGS)
            })?)),
        })
    }

    /// A dialer for client URLs (other members' client ports) with the
    /// client port's settings; as `peer` otherwise.
    pub fn client(info: &TlsInfo) -> Result<Dialer, String> {
        Ok(Dialer {
            tls: Some(Arc::new(Reloading::new(info.clone(), |i| {
                build_client_config(i, &CLIENT_FLAGS)
            })?)),
        })
    }

    /// A dialer for a command-line client (cairnctl, as etcdctl's
    /// `--cacert --cert --key --insecure-skip-tls-verify`): it verifies
    /// servers with `info.trusted_ca_file`, or with the system's CA bundle
    /// when none is given (as Go does), or not at all when
    /// `info.self_signed`; it presents `info`'s certificate only when
    /// `info.cert_file` is not empty.
    pub fn command_line(info: &TlsInfo) -> Result<Dialer, String> {
        Ok(Dialer {
            tls: Some(Arc::new(Reloading::new(
                info.clone(),
                build_command_line_config,
            )?)),
        })
    }

    /// A channel to `url`, connected, through `endpoint` after `tune` set
    /// what the caller wants of it (keep-alives, …).
    pub async fn connect_tuned(
        &self,
        url: &str,
        connect_timeout: Duration,
        tune: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Channel, String> {
        let (endpoint, connector) = self.endpoint(url, connect_timeout)?;
        let endpoint = tune(endpoint);
        match connector {
            None => endpoint.connect().await,
            Some(c) => endpoint.connect_with_connector(c).await,
        }
        .map_err(|e| error_chain(&e))
    }

    /// A channel to `url` that connects on first use.
    pub fn lazy_channel(
        &self,
        url: &str,
        connect_timeout: Duration,
    ) -> Result<tonic::transport::Channel, String> {
        let (endpoint, connector) = self.endpoint(url, connect_timeout)?;
        Ok(match connector {
            None => endpoint.connect_lazy(),
            Some(c) => endpoint.connect_with_connector_lazy(c),
        })
    }

    /// A channel to `url`, connected.
    pub async fn connect(
        &self,
        url: &str,
        connect_timeout: Duration,
    ) -> Result<tonic::transport::Channel, String> {
        let (endpoint, connector) = self.endpoint(url, connect_timeout)?;
        match connector {
            None => endpoint.connect().await,
            Some(c) => endpoint.connect_with_connector(c).await,
        }
        .map_err(|e| error_chain(&e))
    }

    /// The endpoint for `url`, and the TLS connector when it is `https://`.
    /// tonic sees an `http://` URI either way: the TLS is ours, and tonic
    /// would refuse an `https://` URI it has no TLS configuration for.
    fn endpoint(
        &self,
        url: &str,
        connect_timeout: Duration,
    ) -> Result<(tonic::transport::Endpoint, Option<TlsConnector>), String> {
        let invalid = |e: &dyn std::fmt::Display| format!("invalid url {url}: {e}");
        let (uri, connector) = match url.strip_prefix("https://") {
            None => (url.to_owned(), None),
            Some(rest) => {
                let tls = self.tls.clone().ok_or_else(|| {
                    format!("cannot dial {url}: no TLS certificate is configured for this side")
                })?;
                (format!("http://{rest}"), Some(TlsConnector { tls }))
            }
        };
        let endpoint = tonic::transport::Endpoint::from_shared(uri)
            .map_err(|e| invalid(&e))?
            .connect_timeout(connect_timeout);
        Ok((endpoint, connector))
    }
}

/// An error with its sources, one line (tonic's own text is just
/// "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn build_client_config(info: &TlsInfo, flags: &Flags) -> Result<ClientConfig, String> {
    client_config(info, flags, || Arc::new(RootCertStore::empty()), true)
}

/// A client configuration for `info`: servers verified with
/// `info.trusted_ca_file`, else with `roots_without_ca()`, or not at all
/// when `info.self_signed`; `info`'s certificate presented when
/// `identity`.
fn client_config(
    info: &TlsInfo,
    flags: &Flags,
    roots_without_ca: fn() -> Arc<RootCertStore>,
    identity: bool,
) -> Result<ClientConfig, String> {
    let provider = provider(&info.cipher_suites)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (&info.trusted_ca_file, info.self_signed) {
        (_, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipServerVerification(provider.clone()))),
        (Some(ca), false) => builder.with_root_certificates(load_roots(ca, flags.ca)?),
        (None, false) => builder.with_root_certificates(roots_without_ca()),
    };
    let mut config = if identity {
        let (certs, key) = load_identity(info, flags, &provider)?;
        builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("{} {}: {e}", flags.cert, info.cert_file.display()))?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Where Debian, Ubuntu and Alpine keep the system's CA bundle (the first
/// of the files Go's crypto/x509 reads on Linux).
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
];

/// The system's trusted CAs: the first bundle found, else none.
fn system_roots() -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = SYSTEM_CA_FILES.iter().map(Path::new).find(|p| p.exists()) {
        if let Ok(pem) = std::fs::read(path) {
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                // A bundle may hold certificates webpki cannot parse; Go
                // skips them too.
                let _ = roots.add(cert);
            }
        }
    }
    Arc::new(roots)
}

const COMMAND_LINE_FLAGS: Flags = Flags {
    cert: "--cert",
    key: "--key",
    ca: "--cacert",
};

fn build_command_line_config(info: &TlsInfo) -> Result<ClientConfig, String> {
    client_config(
        info,
        &COMMAND_LINE_FLAGS,
        system_roots,
        !info.cert_file.as_os_str().is_empty(),
    )
}

/// Accepts any server certificate (for self-signed `--auto-tls` members),
/// still checking the handshake signatures.
#[derive(Debug)]
struct SkipServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tonic's connector for `https://` URLs: TCP, then the TLS handshake with
/// the URL's host as the server name.
#[derive(Clone)]
struct TlsConnector {
    tls: Arc<Reloading<ClientConfig>>,
}

type ConnectFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
                    io::Error,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> ConnectFuture {
        let config = self.tls.get();
        let named = self.tls.info.server_name.clone();
        Box::pin(async move {
            let bad =
                |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {uri}"));
            let host = uri.host().ok_or_else(|| bad("no host in url"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().ok_or_else(|| bad("no port in url"))?;
            // A name from an SRV record keeps its trailing dot; the
            // certificate names the host without it.
            let name = named.unwrap_or_else(|| host.trim_end_matches('.').to_owned());
            let server_name = ServerName::try_from(name)
                .map_err(|_| bad("host is not a valid TLS server name"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

// ---- self-signed certificates (--auto-tls) ----

/// Makes (or reuses, if both files exist) a self-signed certificate and key
/// in `dir` (`cert.pem`, `key.pem`), valid for `hosts` (IPs or names) for a
/// year, usable as server and client certificate; returns their paths.
pub fn self_cert(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), String> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "cannot make a self-signed certificate in {}: {e}",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| fail(&e))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e))?;
    let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|e| fail(&e))?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| fail(&e))?;
    Ok((cert_path, key_path))
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

// ---- the subject's Common Name, from the certificate's DER ----

/// One DER element at the start of `data`: (tag, contents, rest).
fn der_element(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject's first Common Name (OID 2.5.4.3) of a DER certificate.
pub(crate) fn common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQUENCE, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    // tbsCertificate: [0] version (optional), serial, signature algorithm,
    // issuer, validity, subject.
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, subject, _) = der_element(rest)? else {
        return None;
    };
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (tag, rdn, after) = der_element(rdns)?;
        rdns = after;
        if tag != SET {
            continue;
        }
        let mut atvs = rdn;
        while !atvs.is_empty() {
            let (_, atv, after) = der_element(atvs)?;
            atvs = after;
            let (0x06, oid, value) = der_element(atv)? else {
                continue;
            };
            if oid == CN_OID {
                let (_, text, _) = der_element(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
    use cairn_proto::raftpb::raft_peer_server::{RaftPeer, RaftPeerServer};
    use cairn_proto::raftpb::{
        MembersRequest, MembersResponse, MessageBatch, MessageBatchResponse, PeerMember,
        SnapshotChunk, SnapshotResponse, StreamAck,
    };
    use tonic::{Request, Response, Status, Streaming};

    use super::super::{client_cert_common_name, TlsInfo};
    use super::{Dialer, ServerTls};
    use crate::client_port::{serve_client_port_secured, HttpReply, Listener};

    /// Answers `Members` with one member named after the caller's
    /// certificate CN (empty without one).
    struct EchoCommonName;

    #[tonic::async_trait]
    impl RaftPeer for EchoCommonName {
        async fn send(
            &self,
            _: Request<MessageBatch>,
        ) -> Result<Response<MessageBatchResponse>, Status> {
            Err(Status::unimplemented("test"))
        }

        async fn send_snapshot(
            &self,
            _: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<SnapshotResponse>, Status> {
            Err(Status::unimplemented("test"))
        }

        type StreamStream = tokio_stream::Empty<Result<StreamAck, Status>>;

        async fn stream(
            &self,
            _: Request<Streaming<MessageBatch>>,
        ) -> Result<Response<Self::StreamStream>, Status> {
            Err(Status::unimplemented("test"))
        }

        async fn members(
            &self,
            req: Request<MembersRequest>,
        ) -> Result<Response<MembersResponse>, Status> {
            let name = client_cert_common_name(&req).unwrap_or_default();
            Ok(Response::new(MembersResponse {
                cluster_id: 1,
                members: vec![PeerMember {
                    name,
                    ..PeerMember::default()
                }],
            }))
        }
    }

    struct Pki {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        ca_pem: String,
    }

    impl Pki {
        fn new() -> Pki {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test CA");
            let key = rcgen::KeyPair::generate().expect("key");
            let ca_pem = params.self_signed(&key).expect("CA").pem();
            Pki {
                issuer: rcgen::Issuer::new(params, key),
                ca_pem,
            }
        }

        /// Writes `<name>.pem` / `<name>.key` for `cn` in `dir`.
        fn issue(
            &self,
            dir: &Path,
            name: &str,
            cn: &str,
        ) -> (std::path::PathBuf, std::path::PathBuf) {
            let mut params =
                rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, "cairn");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            params.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.issuer).expect("cert");
            let (c, k) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.key")),
            );
            std::fs::write(&c, cert.pem()).expect("write cert");
            std::fs::write(&k, key.serialize_pem()).expect("write key");
            (c, k)
        }
    }

    /// Serves `EchoCommonName` over TLS on a loopback port; its address.
    async fn serve(info: &TlsInfo) -> std::net::SocketAddr {
        let tls = ServerTls::new(info).expect("server TLS");
        let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr();
        let stats = crate::metrics::grpc::GrpcStats::new(&[], false);
        let router = crate::metrics::grpc::counted_server(&stats)
            .add_service(RaftPeerServer::new(EchoCommonName));
        let http: crate::client_port::HttpHandler =
            std::sync::Arc::new(|req: crate::client_port::HttpRequest| {
                Box::pin(async move { Some(HttpReply::new(200, "text/plain", req.target)) })
            });
        tokio::spawn(serve_client_port_secured(listener, router, http, Some(tls)));
        addr
    }

    async fn caller_name(dialer: &Dialer, addr: std::net::SocketAddr) -> Result<String, String> {
        let channel = dialer
            .connect(&format!("https://{addr}"), Duration::from_secs(5))
            .await?;
        let members = RaftPeerClient::new(channel)
            .members(MembersRequest {})
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        Ok(members.members[0].name.clone())
    }

    #[tokio::test]
    async fn handlers_see_the_verified_client_certificates_common_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).expect("write CA");
        let (server_cert, server_key) = pki.issue(dir.path(), "server", "server");
        let (alice_cert, alice_key) = pki.issue(dir.path(), "alice", "alice");
        let server = |client_cert_auth| TlsInfo {
            cert_file: server_cert.clone(),
            key_file: server_key.clone(),
            trusted_ca_file: Some(ca.clone()),
            client_cert_auth,
            ..TlsInfo::default()
        };
        let alice = Dialer::client(&TlsInfo {
            cert_file: alice_cert,
            key_file: alice_key,
            trusted_ca_file: Some(ca.clone()),
            ..TlsInfo::default()
        })
        .expect("client TLS");

        let with_auth = serve(&server(true)).await;
        assert_eq!(caller_name(&alice, with_auth).await, Ok("alice".to_owned()));
        // Without --client-cert-auth no certificate is asked for: no name.
        let without_auth = serve(&server(false)).await;
        assert_eq!(caller_name(&alice, without_auth).await, Ok(String::new()));
        // A plain dialer cannot reach an https URL at all.
        let plain = caller_name(&Dialer::plain(), with_auth).await;
        assert!(plain.is_err(), "{plain:?}");
    }

    #[test]
    fn common_name_is_read_from_the_subject() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new();
        let (cert, _) = pki.issue(dir.path(), "x", "the-user");
        let der = super::load_certs(&cert, "--cert-file").expect("cert")[0].clone();
        assert_eq!(
            super::common_name(der.as_ref()).as_deref(),
            Some("the-user")
        );
        assert_eq!(super::common_name(b"\x30\x03\x02\x01\x01"), None);
        assert_eq!(super::common_name(b""), None);
    }

    #[test]
    fn self_signed_certificates_are_made_once_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixtures = dir.path().join("fixtures").join("client");
        let hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let (cert, key) = super::self_cert(&fixtures, &hosts).expect("self-signed");
        let first = std::fs::read(&cert).expect("cert");
        let again = super::self_cert(&fixtures, &hosts).expect("reused");
        assert_eq!(again, (cert.clone(), key.clone()));
        assert_eq!(
            std::fs::read(&cert).expect("cert"),
            first,
            "made once, then reused"
        );
        let info = TlsInfo {
            cert_file: cert,
            key_file: key.clone(),
            self_signed: true,
            ..TlsInfo::default()
        };
        ServerTls::new(&info).expect("the self-signed pair loads");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private to its owner");
    }

    #[test]
    fn cipher_suites_narrow_tls12_and_keep_tls13() {
        let only = super::provider(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()])
            .expect("provider");
        let names: Vec<String> = only
            .cipher_suites
            .iter()
            .map(|cs| format!("{:?}", cs.suite()))
            .collect();
        assert!(
            names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("ECDSA")), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("TLS13_")), "{names:?}");
        let tls13 = super::provider(&["TLS_AES_256_GCM_SHA384".to_owned()]).expect("provider");
        assert_eq!(tls13.cipher_suites.len(), 1);
    }
}
