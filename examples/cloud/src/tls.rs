//! TLS for the HTTP listener and the serial lines it listens for, through
//! rustls: `--tls-cert FILE` (the certificate chain, PEM) and `--tls-key
//! FILE` (its private key, PEM) serve the API and the HTTP ingest over
//! HTTPS only, and each `--line` over TLS only (a serial bridge such as
//! ser2net with TLS, or `socat` with `openssl`).
//!
//! Handshakes run on tasks or threads of their own, bounded in time, so a
//! client that stalls its handshake holds up no other.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take over its handshake.
pub(crate) const HANDSHAKE: Duration = Duration::from_secs(10);

/// Handshakes done, waiting for the server to take them.
const READY: usize = 64;

/// A certificate chain and its key of PEM files, given by flags
/// `cert_flag` and `key_flag` (for what a failure says).
pub fn pem_pair(
    cert: &Path,
    key: &Path,
    cert_flag: &str,
    key_flag: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{cert_flag} {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_flag} {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{key_flag} {}: {e}", key.display()))?;
    Ok((chain, key))
}

/// The server's TLS config of a certificate chain and key in PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let (chain, key) = pem_pair(cert, key, "--tls-cert", "--tls-key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert and --tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The HTTP listener's TLS config for a serial line: the same certificate,
/// no ALPN (the line carries COBS frames, not HTTP).
pub fn line_config(http: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = http.clone();
    config.alpn_protocols.clear();
    Arc::new(config)
}

/// A serial line's TCP `stream` once its TLS handshake is done, within
/// 10 s; reads then wait as long as the line stays quiet.
pub fn line_stream(
    config: Arc<rustls::ServerConfig>,
    mut stream: std::net::TcpStream,
) -> io::Result<rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>> {
    let mut tls = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    stream.set_read_timeout(Some(HANDSHAKE))?;
    stream.set_write_timeout(Some(HANDSHAKE))?;
    let deadline = std::time::Instant::now() + HANDSHAKE;
    while tls.is_handshaking() {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake too slow",
            ));
        }
        tls.complete_io(&mut stream)?;
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(rustls::StreamOwned::new(tls, stream))
}

/// A TCP listener whose connections are handed on once their TLS
/// handshake is done; for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Takes connections on `tcp` and shakes hands with `config`, on tasks
    /// of the runtime this is called in.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (done, ready) = mpsc::channel(READY);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, say: a moment, then again.
                        tracing::warn!(error = %e, "https: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if done.is_closed() {
                    return;
                }
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    // A failed or stalled handshake is the client's loss.
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await
                    {
                        let _ = done.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ends only when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
