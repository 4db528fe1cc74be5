//! The exporter's HTTP routes: the telemetry path (`/metrics` by default),
//! a landing page on `/`, `/healthz` (alive while serving) and `/readyz`
//! (ready once every configured table has been polled once). Routing is a
//! plain function of method, path and headers so it is tested without
//! sockets. The metrics page comes from the shared [`Page`], in the format
//! and encoding [`negotiate`](dke_web::negotiate) picks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE,
    RETRY_AFTER, VARY,
};
use hyper::{HeaderMap, Method, Response, StatusCode};

use crate::exposition::page::Page;
use crate::state::store::Store;
use dke_web::negotiate;
use dke_web::serve::Body;
use dke_web::web_config::{Auth, WebState};

/// What the routes need.
pub struct App {
    pub store: Arc<Store>,
    pub page: Arc<Page>,
    pub telemetry_path: String,
    /// The web config: users and extra headers.
    pub web: Arc<WebState>,
    /// Answer `/healthz` and `/readyz` without credentials, and outside
    /// the web config's rate limit (`--web.unauthenticated-probes`).
    pub unauthenticated_probes: bool,
}

enum Route {
    Metrics,
    Landing,
    Health,
    Ready,
}

impl App {
    fn route(&self, path: &str) -> Option<Route> {
        if path == self.telemetry_path {
            return Some(Route::Metrics);
        }
        match path {
            "/" => Some(Route::Landing),
            "/healthz" => Some(Route::Health),
            "/readyz" => Some(Route::Ready),
            _ => None,
        }
    }

    /// Answer one request: apply the rate limit, check credentials, route,
    /// and add the web config's headers. HEAD gets GET's headers; hyper
    /// drops the body.
    pub async fn respond(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let mut resp = self.authorized(method, path, headers).await;
        for (name, value) in self.web.current().headers() {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        resp
    }

    async fn authorized(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
        let probe = matches!(self.route(path), Some(Route::Health | Route::Ready));
        if !(probe && self.unauthenticated_probes) {
            if let Err(wait) = self.web.admit() {
                return too_many_requests(wait);
            }
            let authorization = headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match self.web.authorize(authorization).await {
                Auth::Allowed => {}
                Auth::Denied => {
                    let mut resp = text(StatusCode::UNAUTHORIZED, "401 unauthorized\n");
                    resp.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(
                            "Basic realm=\"dynamodb-kinesis-exporter\", charset=\"UTF-8\"",
                        ),
                    );
                    return resp;
                }
                Auth::Busy => return too_many_requests(Duration::from_secs(1)),
            }
        }
        self.route_request(method, path, headers).await
    }

    async fn route_request(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let Some(route) = self.route(path) else {
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        };
        if method != Method::GET && method != Method::HEAD {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        match route {
            Route::Metrics => self.metrics(headers).await,
            Route::Landing => self.landing(),
            Route::Health => text(StatusCode::OK, "ok\n"),
            Route::Ready => {
                let (polled, total) = self.store.readiness();
                if self.store.is_ready() {
                    text(
                        StatusCode::OK,
                        &format!("ready: {polled} of {total} tables polled\n"),
                    )
                } else {
                    let mut body = format!("not ready: {polled} of {total} tables polled\n");
                    let waiting = self.store.waiting();
                    if !waiting.is_empty() {
                        body.push_str(&format!("waiting for: {}\n", waiting.join(", ")));
                    }
                    text(StatusCode::SERVICE_UNAVAILABLE, &body)
                }
            }
        }
    }

    async fn metrics(&self, request: &HeaderMap) -> Response<Body> {
        let header = |name| {
            request
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let negotiated = negotiate::format(header(ACCEPT));
        let gzip = negotiate::accepts_gzip(header(ACCEPT_ENCODING));
        let chunks = if gzip {
            self.page.gzip(negotiated.format).await
        } else {
            self.page.plain(negotiated.format).await
        };
        let mut resp = Response::new(Body::from_chunks(chunks));
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(negotiated.content_type),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        resp
    }

    fn landing(&self) -> Response<Body> {
        let path = html_escape(&self.telemetry_path);
        let page = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>DynamoDB Kinesis Exporter</title></head>\n<body>\n<h1>DynamoDB Kinesis Exporter</h1>\n<p>Version {version} (revision {revision}).</p>\n<p>Exports the status of DynamoDB Kinesis streaming destinations, polled in the background.</p>\n<ul>\n<li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/healthz\">Health</a></li>\n<li><a href=\"/readyz\">Readiness</a></li>\n</ul>\n</body>\n</html>\n",
            version = crate::VERSION,
            revision = crate::REVISION,
        );
        let mut resp = Response::new(Body::new(Bytes::from(page)));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp
    }
}

/// `429`, with when to try again (whole seconds, at least 1).
fn too_many_requests(wait: Duration) -> Response<Body> {
    let mut resp = text(StatusCode::TOO_MANY_REQUESTS, "429 too many requests\n");
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Destination;
    use crate::state::TableKey;
    use http_body_util::BodyExt;

    fn app(path: &str) -> App {
        let key = TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: "orders".into(),
        };
        let store = Arc::new(Store::new([key]));
        let page = Arc::new(Page::new(
            Arc::clone(&store),
            Arc::new(crate::exposition::metrics::Telemetry::new(false)),
        ));
        App {
            store,
            page,
            telemetry_path: path.into(),
            web: Arc::new(WebState::plain()),
            unauthenticated_probes: false,
        }
    }

    async fn get(app: &App, method: &Method, path: &str) -> Response<Body> {
        app.respond(method, path, &HeaderMap::new()).await
    }

    async fn body(resp: Response<Body>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn routes_and_status_codes() {
        let app = app("/metrics");
        let cases = [
            (Method::GET, "/metrics", StatusCode::OK),
            (Method::HEAD, "/metrics", StatusCode::OK),
            (Method::GET, "/", StatusCode::OK),
            (Method::GET, "/healthz", StatusCode::OK),
            (Method::GET, "/readyz", StatusCode::SERVICE_UNAVAILABLE),
            (Method::GET, "/nope", StatusCode::NOT_FOUND),
            (Method::POST, "/nope", StatusCode::NOT_FOUND),
            (Method::POST, "/metrics", StatusCode::METHOD_NOT_ALLOWED),
            (Method::DELETE, "/", StatusCode::METHOD_NOT_ALLOWED),
            (Method::PUT, "/readyz", StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (method, path, status) in cases {
            let resp = get(&app, &method, path).await;
            assert_eq!(resp.status(), status, "{method} {path}");
            if status == StatusCode::METHOD_NOT_ALLOWED {
                assert_eq!(resp.headers()[ALLOW], "GET, HEAD");
            }
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_store() {
        let app = app("/metrics");
        assert_eq!(
            body(get(&app, &Method::GET, "/readyz").await).await,
            "not ready: 0 of 1 tables polled\n"
        );
        let key = TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: "orders".into(),
        };
        app.store
            .set_waiting(vec!["discovery in 123456789012/us-east-1".into()]);
        app.store.record(&key, &Ok(Vec::<Destination>::new()), 1.0);
        let resp = get(&app, &Method::GET, "/readyz").await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(resp).await,
            "not ready: 1 of 1 tables polled\nwaiting for: discovery in 123456789012/us-east-1\n"
        );
        app.store.set_waiting(Vec::new());
        let resp = get(&app, &Method::GET, "/readyz").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body(resp).await, "ready: 1 of 1 tables polled\n");
    }

    #[tokio::test]
    async fn custom_telemetry_path_moves_metrics() {
        let app = app("/custom/path");
        assert_eq!(
            get(&app, &Method::GET, "/metrics").await.status(),
            StatusCode::NOT_FOUND
        );
        let resp = get(&app, &Method::GET, "/custom/path").await;
        assert_eq!(resp.headers()[CONTENT_TYPE], negotiate::TEXT_CONTENT_TYPE);
        let text = body(resp).await;
        assert!(text.contains("# TYPE dynamodb_kinesis_destination_status gauge\n"));
        let landing = body(get(&app, &Method::GET, "/").await).await;
        assert!(
            landing.contains("<a href=\"/custom/path\">Metrics</a>"),
            "{landing}"
        );
        assert!(landing.contains(crate::VERSION));
    }

    #[tokio::test]
    async fn basic_auth_guards_every_path_and_probes_only_by_flag() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let config = dke_web::web_config::parse(
            &format!("basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"),
            std::path::Path::new("w.yml"),
        )
        .unwrap();
        let mut app = app("/metrics");
        app.web = Arc::new(WebState::new(config, None));
        let with = |auth: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(auth) = auth {
                headers.insert(hyper::header::AUTHORIZATION, HeaderValue::from_static(auth));
            }
            headers
        };
        // alice:pw, alice:no, bob:pw
        let right = Some("Basic YWxpY2U6cHc=");
        let cases = [
            (None, "/metrics", StatusCode::UNAUTHORIZED),
            (
                Some("Basic YWxpY2U6bm8="),
                "/metrics",
                StatusCode::UNAUTHORIZED,
            ),
            (Some("Basic Ym9iOnB3"), "/metrics", StatusCode::UNAUTHORIZED),
            (right, "/metrics", StatusCode::OK),
            (None, "/healthz", StatusCode::UNAUTHORIZED),
            (right, "/healthz", StatusCode::OK),
        ];
        for (auth, path, status) in cases {
            let resp = app.respond(&Method::GET, path, &with(auth)).await;
            assert_eq!(resp.status(), status, "{auth:?} {path}");
            assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
            if status == StatusCode::UNAUTHORIZED {
                assert!(resp.headers()[hyper::header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic "));
            }
        }
        app.unauthenticated_probes = true;
        for path in ["/healthz", "/readyz"] {
            let resp = app.respond(&Method::GET, path, &with(None)).await;
            assert_ne!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let resp = app.respond(&Method::GET, "/metrics", &with(None)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_answers_429_and_spares_unauthenticated_probes() {
        let config = dke_web::web_config::parse(
            "rate_limit:\n  interval: 10s\n  burst: 2\n",
            std::path::Path::new("w.yml"),
        )
        .unwrap();
        let mut app = app("/metrics");
        app.web = Arc::new(WebState::new(config, None));
        assert_eq!(
            get(&app, &Method::GET, "/metrics").await.status(),
            StatusCode::OK
        );
        assert_eq!(get(&app, &Method::GET, "/").await.status(), StatusCode::OK);
        let limited = get(&app, &Method::GET, "/metrics").await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[RETRY_AFTER], "10");
        // Probes count too, unless they are answered without credentials.
        assert_eq!(
            get(&app, &Method::GET, "/healthz").await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        app.unauthenticated_probes = true;
        for _ in 0..5 {
            assert_eq!(
                get(&app, &Method::GET, "/healthz").await.status(),
                StatusCode::OK
            );
        }
        tokio::time::advance(Duration::from_millis(2500)).await;
        let limited = get(&app, &Method::GET, "/metrics").await;
        assert_eq!(limited.headers()[RETRY_AFTER], "8", "7.5 s, rounded up");
        tokio::time::advance(Duration::from_millis(7500)).await;
        assert_eq!(
            get(&app, &Method::GET, "/metrics").await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn metrics_negotiate_format_and_gzip() {
        let app = app("/metrics");
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let resp = app.respond(&Method::GET, "/metrics", &headers).await;
        assert_eq!(
            resp.headers()[CONTENT_TYPE],
            negotiate::OPENMETRICS_CONTENT_TYPE
        );
        assert_eq!(resp.headers()[CONTENT_ENCODING], "gzip");
        let zipped = resp.into_body().collect().await.unwrap().to_bytes();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut text)
            .unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        headers.remove(ACCEPT);
        let resp = app.respond(&Method::GET, "/metrics", &headers).await;
        assert_eq!(resp.headers()[CONTENT_TYPE], negotiate::TEXT_CONTENT_TYPE);
    }
}
