//! The listening side of a pipeline's router, kept across restarts of the pipeline: a
//! [`Front`] owns the socket and hands each request to the router attached now. A reload
//! that restarts the pipeline detaches the old router (it finishes the requests it holds)
//! and attaches the new one; requests that arrive in between wait for it (up to the
//! router's `ready_wait`), so no connection is refused and no request fails for the reload.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router as Routes;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::watch;
use tracing::info;

use super::{Router, RouterSettings, error_response};
use crate::http_server::ConnectionStats;

/// The router a front hands requests to, with its request limits.
#[derive(Clone)]
struct Attached {
    router: Router,
    max_body_bytes: usize,
}

struct Inner {
    address: SocketAddr,
    target: watch::Sender<Option<Attached>>,
    /// How long a request waits for a router while none is attached.
    wait: Mutex<Duration>,
    stop: watch::Sender<bool>,
    /// The client connections of the socket, whichever router is attached.
    connections: Arc<ConnectionStats>,
}

/// A router's listening socket and the router it serves now; cheap to clone.
#[derive(Clone)]
pub struct Front {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl Front {
    /// Binds `settings.listen` and serves it until [`Front::close`]; no router is attached
    /// yet.
    pub async fn bind(settings: &RouterSettings) -> Result<Front, super::RouterError> {
        let listener = super::bind(settings).await?;
        let address = listener.local_addr().unwrap_or(settings.listen);
        let (stop, mut stopped) = watch::channel(false);
        let front = Front {
            inner: Arc::new(Inner {
                address,
                target: watch::channel(None).0,
                wait: Mutex::new(settings.ready_wait),
                stop,
                connections: Arc::new(ConnectionStats::default()),
            }),
        };
        let routes = Routes::new()
            .route("/v2/models/{model}/infer", post(infer))
            .route("/v2/health/ready", get(ready))
            .route("/v2/health/live", get(|| async { StatusCode::OK }))
            .with_state(front.clone());
        info!(
            %address,
            max_connections = settings.limits.max_connections,
            "router listening"
        );
        let limits = settings.limits;
        let connections = Arc::clone(&front.inner.connections);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            crate::http_server::serve(
                listener,
                routes,
                limits,
                connections,
                format!("router at {address}"),
                shutdown,
            )
            .await;
        });
        Ok(front)
    }

    /// The connections of its socket (a router behind it reports them as its own).
    pub fn connections(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.inner.connections)
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.inner.address
    }

    /// New requests go to `router` from now on.
    pub fn attach(&self, router: Router, settings: &RouterSettings) {
        *self.inner.wait.lock().unwrap_or_else(|p| p.into_inner()) = settings.ready_wait;
        self.inner.target.send_replace(Some(Attached {
            router,
            max_body_bytes: settings.max_body_bytes,
        }));
    }

    /// The router attached now, if any.
    pub fn attached(&self) -> Option<Router> {
        self.inner
            .target
            .borrow()
            .as_ref()
            .map(|a| a.router.clone())
    }

    /// New requests no longer go to `router` (when it is the one attached); they wait for
    /// the next one. The requests it holds are its own to finish.
    pub fn detach(&self, router: &Router) {
        self.inner.target.send_if_modified(|target| {
            let ours = target
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(&t.router.inner, &router.inner));
            if ours {
                *target = None;
            }
            ours
        });
    }

    /// Stops listening; requests being answered are finished.
    pub fn close(&self) {
        self.inner.stop.send_replace(true);
    }

    /// The router attached now, waiting for one up to the last `ready_wait`.
    async fn current(&self) -> Option<Attached> {
        let wait = *self.inner.wait.lock().unwrap_or_else(|p| p.into_inner());
        let mut target = self.inner.target.subscribe();
        let found = tokio::time::timeout(wait, target.wait_for(Option::is_some)).await;
        match found {
            Ok(Ok(attached)) => attached.clone(),
            _ => None,
        }
    }
}

async fn infer(
    State(front): State<Front>,
    model: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let Some(attached) = front.current().await else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no router serves {} now (the pipeline is restarting or stopped)",
                front.address()
            ),
        );
    };
    let bytes = match Limited::new(body, attached.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the limit (`max_body_bytes`)".to_owned(),
            );
        }
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {error}"),
            );
        }
    };
    super::infer(State(attached.router), model, Ok(bytes)).await
}

async fn ready(State(front): State<Front>) -> StatusCode {
    let attached = front.inner.target.borrow().clone();
    match attached {
        Some(a) if a.router.ready() => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}
