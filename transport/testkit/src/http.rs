//! The server's end over HTTP (feature `http`): axum on a loopback port,
//! with answers a test can script.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use telemark_http::exchange;
use telemark_server::{MemoryStore, ReceiveError, Server};

use crate::{keyring, unix_ms};

/// An answer the test server gives instead of taking the frame.
#[derive(Clone, Copy)]
pub enum Scripted {
    /// 429 with this Retry-After.
    Busy(&'static str),
    /// 401.
    Unauthorized,
    /// The frame taken, and a 200 whose body no device buffer holds.
    Oversized,
}

#[derive(Clone)]
struct App {
    server: Arc<Mutex<(Server, MemoryStore)>>,
    script: Arc<Mutex<VecDeque<Scripted>>>,
}

async fn up(State(app): State<App>, body: Bytes) -> Response {
    let scripted = app.script.lock().unwrap().pop_front();
    match scripted {
        Some(Scripted::Busy(after)) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, after)],
            )
                .into_response()
        }
        Some(Scripted::Unauthorized) => return StatusCode::UNAUTHORIZED.into_response(),
        Some(Scripted::Oversized) | None => {}
    }
    let mut guard = app.server.lock().unwrap();
    let (server, store) = &mut *guard;
    let received = server.receive(store, &body, unix_ms());
    if let Some(Scripted::Oversized) = scripted {
        // Committed, but the answer is lost on the way.
        return vec![0u8; 4096].into_response();
    }
    match received {
        Ok(received) => (
            [(header::CONTENT_TYPE, exchange::CONTENT_TYPE)],
            received.response,
        )
            .into_response(),
        Err(ReceiveError::Refused(refusal)) => {
            (StatusCode::BAD_REQUEST, format!("refused: {refusal}")).into_response()
        }
        Err(ReceiveError::Store(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("not stored: {e}"),
        )
            .into_response(),
    }
}

/// The HTTP server end, running.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    app: App,
}

impl TestServer {
    fn router(app: App) -> Router {
        Router::new()
            .route(exchange::PATH, post(up))
            .with_state(app)
    }

    fn app() -> App {
        App {
            server: Arc::new(Mutex::new((Server::new(keyring()), MemoryStore::new()))),
            script: Arc::default(),
        }
    }

    /// Starts on a free loopback port.
    pub async fn start() -> TestServer {
        let app = TestServer::app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = TestServer::router(app.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        TestServer { addr, app }
    }

    /// Starts on a free loopback port, serving HTTPS with `tls` (which
    /// may ask for client certificates).
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> TestServer {
        let app = TestServer::app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = TestServer::router(app.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    // A client without an acceptable certificate ends here.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { addr, app }
    }

    /// The next frame gets `answer`.
    pub fn then_answer(&self, answer: Scripted) {
        self.app.script.lock().unwrap().push_back(answer);
    }

    /// The server and its store.
    pub fn store(&self) -> std::sync::MutexGuard<'_, (Server, MemoryStore)> {
        self.app.server.lock().unwrap()
    }
}

/// The device's TCP, as its firmware has it from embassy-net: tokio
/// sockets behind the embedded-io adapter.
pub struct Tcp;

impl embedded_nal_async::TcpConnect for Tcp {
    type Error = std::io::Error;
    type Connection<'a> = embedded_io_adapters::tokio_1::FromTokio<tokio::net::TcpStream>;

    async fn connect<'a>(
        &'a self,
        remote: SocketAddr,
    ) -> Result<Self::Connection<'a>, Self::Error> {
        let stream = tokio::net::TcpStream::connect(remote).await?;
        Ok(embedded_io_adapters::tokio_1::FromTokio::new(stream))
    }
}
