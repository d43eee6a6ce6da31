//! What the data service sees is what the gateway checked: a transfer is a
//! GET or a POST and nothing else; the target is decoded once, the same way
//! for the scope check and the upstream; the query reaches the upstream
//! rebuilt from the parameters the gateway read, each once; empty path
//! segments, repeated and unknown parameters are refused before anything
//! is opened.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// What the data service was asked: method, path and query, target header.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    method: Method,
    path_and_query: String,
    target: String,
}

/// A data service that records every request and answers a small body.
async fn recording_upstream(stop: CancellationToken) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap().0,
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: http::Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .map(|v| v.to_str().unwrap().to_owned())
                                    .unwrap_or_default()
                            };
                            log.lock().unwrap().push(Seen {
                                method: request.method().clone(),
                                path_and_query: request.uri().path_and_query().unwrap().to_string(),
                                target: header("x-xborder-target"),
                            });
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                xborder::wire::full("a record"),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Setup {
    world: World,
    gateway: Running,
    police: xborder::pki::Issued,
    token: String,
    grant: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
}

/// EE's gateway before a recording data service, and a grant for FI's
/// police over subscriber data (target `+3725550123`, period
/// 2026-01-01 to 2026-06-30).
async fn setup() -> Setup {
    let world = World::new();
    let stop = CancellationToken::new();
    let (upstream, seen) = recording_upstream(stop.clone()).await;
    let gateway = Running::start_with(world.config(upstream), stop.clone()).await;
    let police = world.fi_police();
    let (token, grant) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber", "content"],
        serde_json::json!({}),
    )
    .await;
    Setup {
        world,
        gateway,
        police,
        token,
        grant,
        seen,
        stop,
    }
}

impl Setup {
    /// `method` on `path` with the grant's token: status, `Allow`, problem code.
    async fn send(&self, method: Method, path: &str) -> (StatusCode, Option<String>, Value) {
        let mut conn = self
            .world
            .client(Some(&self.police))
            .connect(self.gateway.border, "localhost")
            .await
            .unwrap();
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token))
            .body(xborder::wire::full(""))
            .unwrap();
        let response = conn.send(request).await.unwrap();
        let status = response.status();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let problem = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, allow, problem)
    }

    /// Asserts `path` is refused with `status` and `code`, and the data
    /// service was not called.
    async fn refused(&self, method: Method, path: &str, status: StatusCode, code: &str) {
        let before = self.seen.lock().unwrap().len();
        let (got, _, problem) = self.send(method.clone(), path).await;
        assert_eq!(got, status, "{method} {path}: {problem}");
        assert_eq!(problem["code"], code, "{method} {path}");
        assert_eq!(
            self.seen.lock().unwrap().len(),
            before,
            "{method} {path} reached the data service"
        );
    }

    /// What the data service saw for the one successful `path`.
    async fn passed(&self, path: &str) -> Seen {
        let before = self.seen.lock().unwrap().len();
        let (status, _, problem) = self.send(Method::GET, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {problem}");
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.len(), before + 1, "{path}: one call upstream");
        seen[before].clone()
    }

    async fn used_transfers(&self) -> u64 {
        let (status, grant) = send_json(
            &admin(&self.world, "operator"),
            self.gateway.admin,
            Method::GET,
            &format!("/v1/grants/{}", self.grant),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{grant}");
        grant["used_transfers"].as_u64().unwrap()
    }

    async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.stop.cancel();
    }
}

const TARGET: &str = "/v1/data/subscriber/+3725550123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_and_post_are_transfers_and_the_rest_opens_nothing() {
    let s = setup().await;
    for method in ["DELETE", "PUT", "PATCH", "OPTIONS", "TRACE", "HEAD"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let before = s.seen.lock().unwrap().len();
        let (status, allow, problem) = s.send(method.clone(), TARGET).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(allow.as_deref(), Some("GET, POST"), "{method}");
        if method != Method::HEAD {
            assert_eq!(problem["code"], "method_not_allowed", "{method}");
        }
        assert_eq!(
            s.seen.lock().unwrap().len(),
            before,
            "{method} reached the data service"
        );
    }
    assert_eq!(s.used_transfers().await, 0, "no refused method counted");

    let seen = s.passed(TARGET).await;
    assert_eq!(seen.method, Method::GET);
    assert_eq!(s.used_transfers().await, 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_is_decoded_once_for_the_check_and_the_upstream() {
    let s = setup().await;
    // The granted target, percent-encoded: the same target.
    let seen = s.passed("/v1/data/subscriber/%2B3725550123").await;
    assert_eq!(
        seen.path_and_query,
        "/subscriber/+3725550123?from=2026-01-01T00:00:00Z&to=2026-06-30T00:00:00Z"
    );
    assert_eq!(seen.target, "+3725550123");
    // Further segments are decoded and re-encoded the one way too.
    let seen = s
        .passed("/v1/data/subscriber/+3725550123/calls%20in/%41pril")
        .await;
    assert_eq!(
        seen.path_and_query,
        "/subscriber/+3725550123/calls%20in/April?from=2026-01-01T00:00:00Z&to=2026-06-30T00:00:00Z"
    );

    // Empty segments could make an upstream read another resource.
    for path in [
        "/v1/data/subscriber//+3725550123",
        "/v1/data/subscriber/+3725550123/",
        "/v1/data/subscriber/+3725550123//x",
    ] {
        s.refused(Method::GET, path, StatusCode::BAD_REQUEST, "bad_path")
            .await;
    }
    // Decoding never turns into another target or a control character.
    s.refused(
        Method::GET,
        "/v1/data/subscriber/%2B3725550125",
        StatusCode::FORBIDDEN,
        "scope_target",
    )
    .await;
    s.refused(
        Method::GET,
        "/v1/data/subscriber/+3725550123%0A",
        StatusCode::BAD_REQUEST,
        "bad_path",
    )
    .await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_the_period_the_gateway_checked_and_nothing_else() {
    let s = setup().await;
    // Parameter pollution: a second `from` the data service might read.
    s.refused(
        Method::GET,
        &format!("{TARGET}?from=2026-02-01T00:00:00Z&from=2019-01-01T00:00:00Z"),
        StatusCode::BAD_REQUEST,
        "query_parameter_repeated",
    )
    .await;
    // An encoded key is the key it decodes to: checked, and out of the grant.
    s.refused(
        Method::GET,
        &format!("{TARGET}?fr%6Fm=2019-01-01T00:00:00Z"),
        StatusCode::FORBIDDEN,
        "scope_period",
    )
    .await;
    s.refused(
        Method::GET,
        &format!("{TARGET}?from=2026-02-01T00:00:00Z&fr%6Fm=2019-01-01T00:00:00Z"),
        StatusCode::BAD_REQUEST,
        "query_parameter_repeated",
    )
    .await;
    // A parameter the route does not take never reaches the data service.
    s.refused(
        Method::GET,
        &format!("{TARGET}?since=2019-01-01T00:00:00Z"),
        StatusCode::BAD_REQUEST,
        "query_parameter_unknown",
    )
    .await;

    // What passes reaches it in one canonical form: both bounds, as checked.
    let seen = s
        .passed(&format!(
            "{TARGET}?to=2026-03-01T02:00:00%2B02:00&fields=name"
        ))
        .await;
    assert_eq!(
        seen.path_and_query,
        "/subscriber/+3725550123?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z&fields=name"
    );
    // The route's own parameters: decoded once, encoded once, never twice.
    let seen = s.passed(&format!("{TARGET}?f%69elds=a%26b%3Dc+d")).await;
    assert_eq!(
        seen.path_and_query,
        "/subscriber/+3725550123?from=2026-01-01T00:00:00Z&to=2026-06-30T00:00:00Z&fields=a%26b%3Dc%2Bd"
    );
    s.refused(
        Method::GET,
        &format!("{TARGET}?fields=a&fields=b"),
        StatusCode::BAD_REQUEST,
        "query_parameter_repeated",
    )
    .await;
    assert_eq!(
        s.used_transfers().await,
        2,
        "only what passed was a transfer"
    );
    s.shutdown().await;
}
