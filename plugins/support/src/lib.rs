//! What backend plugins share, so that each does not write its own: a blocking HTTP client
//! over `ureq` ([`http`]; TLS only with the `tls` feature), the client of one plugin call
//! with a time budget and errors naming the call ([`call`]), a tolerant reader of the
//! Prometheus text format with count checks that keep sums finite ([`prometheus`]), and the
//! restart backoff ([`backoff`]). Plugins depend on `plugins/abi` and this crate only.

pub mod backoff;
pub mod call;
pub mod http;
pub mod prometheus;

pub use backoff::exponential_backoff;
pub use call::CallError;
pub use http::{Answer, ClientOptions, HttpClient, HttpError, Method, TransportKind};
