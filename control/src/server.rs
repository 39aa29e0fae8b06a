//! Serving the API: a Unix socket always, TCP when configured; with the standard gRPC health
//! and reflection services, so `grpcurl` works without .proto files.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tonic::codegen::http;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use vswitch_proto::v1::flow_service_server::FlowServiceServer;
use vswitch_proto::v1::mac_table_service_server::MacTableServiceServer;
use vswitch_proto::v1::port_service_server::PortServiceServer;
use vswitch_proto::v1::switch_service_server::SwitchServiceServer;
use vswitch_proto::v1::tunnel_service_server::TunnelServiceServer;

use crate::metrics::RpcMetrics;
use crate::service::Api;
use crate::uds_authority;
use tokio_stream::StreamExt;

/// Largest request or response of the flow service (dumps and batches of many flows).
pub const MAX_MESSAGE: usize = 512 << 20;

/// Why the API could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another vswitchd is already serving on {0}; stop it or set control.socket to another path")]
    InUse(PathBuf),
    #[error("cannot listen on {path}: {source}")]
    Unix { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Tcp { addr: SocketAddr, source: std::io::Error },
}

/// Fails if a live server answers on `path`; removes a stale socket file left by a crash.
/// Creates the socket's directory.
pub fn prepare_socket(path: &Path) -> Result<(), ListenError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|source| ListenError::Unix { path: path.to_path_buf(), source })?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ListenError::Unix { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

/// Listeners bound before serving, so binding errors surface before anything runs.
pub struct Listeners {
    unix: UnixListener,
    unix_path: PathBuf,
    tcp: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(unix_path: &Path, tcp: Option<SocketAddr>) -> Result<Listeners, ListenError> {
        prepare_socket(unix_path)?;
        let unix = UnixListener::bind(unix_path)
            .map_err(|source| ListenError::Unix { path: unix_path.to_path_buf(), source })?;
        let tcp = match tcp {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| ListenError::Tcp { addr, source })?),
            None => None,
        };
        Ok(Listeners { unix, unix_path: unix_path.to_path_buf(), tcp })
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr().ok())
    }
}

/// Accepted TCP connections, with `TCP_NODELAY`: without it a segment that ends a message
/// can wait for the peer's delayed ACK (Nagle), and a 10k-flow `AddFlows` over TCP took
/// 48-58 ms instead of 13. tonic sets it only on listeners it binds itself.
fn tcp_incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| conn.and_then(|s| s.set_nodelay(true).map(|()| s)))
}

async fn router(
    api: Api,
) -> tonic::transport::server::Router<tower::layer::util::Stack<RpcMetricsLayer, tower::layer::util::Identity>> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Every service is up from the first request on: the switch started before the API.
    health_reporter.set_serving::<SwitchServiceServer<Api>>().await;
    health_reporter.set_serving::<PortServiceServer<Api>>().await;
    health_reporter.set_serving::<MacTableServiceServer<Api>>().await;
    health_reporter.set_serving::<FlowServiceServer<Api>>().await;
    health_reporter.set_serving::<TunnelServiceServer<Api>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vswitch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection descriptors are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vswitch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("reflection descriptors are valid");
    Server::builder()
        .layer(RpcMetricsLayer::new(api.rpc_metrics().clone()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(SwitchServiceServer::new(api.clone()))
        .add_service(PortServiceServer::new(api.clone()))
        .add_service(MacTableServiceServer::new(api.clone()))
        .add_service(TunnelServiceServer::new(api.clone()))
        // Flow batches of 100,000 rules are several MB.
        .add_service(
            FlowServiceServer::new(api).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
        )
}

/// Serves until `shutdown` completes, then removes the Unix socket.
pub async fn serve(
    api: Api,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Unix connections have their :authority rewritten where a client sent a path (see uds_authority).
    let unix_incoming =
        UnixListenerStream::new(listeners.unix).map(|conn| conn.map(uds_authority::AuthorityRewriting::new));
    let unix = router(api.clone()).await.serve_with_incoming_shutdown(unix_incoming, stopped(stop_rx.clone()));
    let result = match listeners.tcp {
        Some(tcp) => {
            let tcp = router(api).await.serve_with_incoming_shutdown(tcp_incoming(tcp), stopped(stop_rx));
            let (a, b) = tokio::join!(unix, tcp);
            a.and(b)
        }
        None => unix.await,
    };
    let _ = std::fs::remove_file(&listeners.unix_path);
    result
}

/// Counts every gRPC request by method and status code and times it to the end of its
/// response (status codes of successful calls come in trailers, so the body is watched).
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<RpcMetrics>) -> RpcMetricsLayer {
        RpcMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let watch =
            Watch { method: req.uri().path().to_string(), start: Instant::now(), metrics: self.metrics.clone() };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            // Errors (and trailers-only replies) carry grpc-status in the headers.
            if let Some(code) = grpc_status(response.headers()) {
                watch.finish(code);
                return Ok(response);
            }
            Ok(response.map(|inner| Body::new(WatchedBody { inner, watch: Some(watch) })))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(v))
}

struct Watch {
    method: String,
    start: Instant,
    metrics: Arc<RpcMetrics>,
}

impl Watch {
    fn finish(self, code: tonic::Code) {
        self.metrics.record(&self.method, code, self.start.elapsed());
    }
}

/// A response body that records its call when the trailers pass (or when it is dropped
/// unfinished: the client went away).
struct WatchedBody {
    inner: Body,
    watch: Option<Watch>,
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.finish(tonic::Code::Cancelled);
        }
    }
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    if let Some(w) = self.watch.take() {
                        w.finish(code);
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(w) = self.watch.take() {
                    w.finish(status.code());
                }
            }
            Poll::Ready(None) => {
                if let Some(w) = self.watch.take() {
                    w.finish(tonic::Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_tcp_connections_do_not_wait_for_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let mut incoming = std::pin::pin!(tcp_incoming(listener));
        let accepted = incoming.next().await.expect("a connection").expect("accepted");
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY set on the server's side");
        client.await.unwrap().unwrap();
    }
}
