//! The exporter's HTTP routes: the telemetry path (`/metrics` by default),
//! the status page on `/` (every polled table, problems first, rendered by
//! [`status`]), `/healthz` (alive while serving) and `/readyz` (ready once
//! every configured table has been polled once). Routing is a plain
//! function of method, request target and headers so it is tested without
//! sockets. The metrics page comes from the shared [`Page`], in the format
//! and encoding [`negotiate`](dke_web::negotiate) picks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, RETRY_AFTER, VARY,
};
use hyper::{HeaderMap, Method, Response, StatusCode};

use crate::exposition::page::Page;
use crate::exposition::status::{self, Answer};
use crate::state::store::Store;
use crate::state::unix_now;
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
    /// and add the web config's headers. `target` is the request's path
    /// and query (`/?page=2`); only the status page reads the query. HEAD
    /// gets GET's headers; hyper drops the body.
    pub async fn respond(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut resp = self.authorized(method, path, query, headers).await;
        for (name, value) in self.web.current().headers() {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        resp
    }

    async fn authorized(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response<Body> {
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
        self.route_request(method, path, query, headers).await
    }

    async fn route_request(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
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
            Route::Landing => self.status_page(query).await,
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

    /// The status page: rendered on the blocking pool, as the metrics page
    /// is, since at thousands of tables it takes milliseconds.
    async fn status_page(&self, query: Option<&str>) -> Response<Body> {
        let store = Arc::clone(&self.store);
        let telemetry_path = self.telemetry_path.clone();
        let query = query.map(str::to_string);
        let rendered = tokio::task::spawn_blocking(move || {
            let header = status::Header {
                telemetry_path: &telemetry_path,
            };
            status::answer(&store, query.as_deref(), &header, unix_now())
        })
        .await;
        let (code, html) = match rendered {
            Ok(Answer::Page(html)) => (StatusCode::OK, html),
            Ok(Answer::Refused(status::PageError::NotANumber(_), html)) => {
                (StatusCode::BAD_REQUEST, html)
            }
            Ok(Answer::Refused(status::PageError::OutOfRange { .. }, html)) => {
                (StatusCode::NOT_FOUND, html)
            }
            Err(err) => {
                tracing::error!(error = %err, "rendering the status page failed");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 the status page could not be rendered\n",
                );
            }
        };
        let mut resp = Response::new(Body::new(Bytes::from(html)));
        *resp.status_mut() = code;
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(status::CONTENT_SECURITY_POLICY),
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
            // The status page goes through the same check, before its
            // query is read.
            (None, "/", StatusCode::UNAUTHORIZED),
            (Some("Basic YWxpY2U6bm8="), "/", StatusCode::UNAUTHORIZED),
            (None, "/?page=abc", StatusCode::UNAUTHORIZED),
            (None, "/?page=1", StatusCode::UNAUTHORIZED),
            (right, "/", StatusCode::OK),
            (right, "/?page=1", StatusCode::OK),
            (right, "/?page=abc", StatusCode::BAD_REQUEST),
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
        for path in ["/metrics", "/", "/?page=1"] {
            let resp = app.respond(&Method::GET, path, &with(None)).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
    }

    #[tokio::test]
    async fn the_status_page_answers_html_pages_and_refusals() {
        let app = app("/metrics");
        let key = TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: "orders".into(),
        };
        app.store.record(
            &key,
            &Ok(vec![Destination {
                stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc".into(),
                status: "ENABLE_FAILED".into(),
                status_description: Some("KMS key disabled".into()),
                precision: None,
            }]),
            crate::state::unix_now(),
        );
        for method in [Method::GET, Method::HEAD] {
            let resp = get(&app, &method, "/").await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
            assert_eq!(
                resp.headers()[CONTENT_SECURITY_POLICY],
                "default-src 'none'; style-src 'unsafe-inline'"
            );
        }
        let html = scraper::Html::parse_document(&body(get(&app, &Method::GET, "/").await).await);
        let cells: Vec<String> = html
            .select(&scraper::Selector::parse("tbody.row td").unwrap())
            .map(|td| td.text().collect::<String>())
            .collect();
        assert_eq!(
            cells[0],
            "ENABLE FAILEDENABLE_FAILED and no ACTIVE or UPDATING destination"
        );
        assert_eq!(cells[3], "orders");
        assert!(cells[4].starts_with("ENABLE_FAILED for "), "{cells:?}");
        for (target, status) in [
            ("/?page=1", StatusCode::OK),
            ("/?page=2", StatusCode::NOT_FOUND),
            ("/?page=abc", StatusCode::BAD_REQUEST),
            ("/?page=0", StatusCode::BAD_REQUEST),
            ("/metrics?page=abc", StatusCode::OK),
            ("/healthz?x=1", StatusCode::OK),
            ("/nope?page=1", StatusCode::NOT_FOUND),
        ] {
            let resp = get(&app, &Method::GET, target).await;
            assert_eq!(resp.status(), status, "{target}");
            if target.starts_with("/?") {
                assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
            }
        }
        let refused = body(get(&app, &Method::GET, "/?page=2").await).await;
        assert!(
            refused
                .contains("Page 2 does not exist: there is 1 page of 500 rows at most (1 table)."),
            "{refused}"
        );
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
