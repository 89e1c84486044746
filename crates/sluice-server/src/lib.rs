//! The sluice HTTP server: the accept loop and graceful shutdown ([`serve`]), the router,
//! the request pipeline every proxied endpoint goes through ([`pipeline`], over the
//! [`endpoint`] descriptions), the admin API, the web console (`/ui`), `/metrics` and
//! `/health`.
//!
//! Layers, each importing only those below it: the components the gateway is built of
//! (`keys`, `cache`, `conversations` (stored responses), `local`, `metrics`, `money`, request and response
//! bodies), the state
//! built once from the config (`state`), the pipeline's stages, then the handlers, the
//! router and the server. See README's Architecture section for the path of a request.
#![forbid(unsafe_code)]

mod admin_history;
pub mod admin_keys;
mod admin_local;
mod admin_query;
mod admin_requests;
mod admin_samples;
mod admission;
pub mod batches;
mod budget_use;
pub mod cache;
mod canary_file;
mod console;
mod conversations;
mod drain;
mod endpoint;
mod files;
mod front;
mod handlers;
mod headers;
pub mod health_check;
mod health_status;
pub mod history;
pub mod key_spec;
mod keys;
mod label;
mod list_wire;
pub mod live;
pub mod local;
pub mod metrics;
mod money;
mod multipart_body;
mod pipeline;
mod ready;
mod request_body;
mod request_id;
mod response;
mod router;
pub mod samples;
mod serve;
pub mod shared_routing;
pub mod state;
mod stored_responses;
pub mod trace;
pub mod trim;
mod upload;

pub use request_body::ClientBody;
pub use router::route;
pub use serve::Server;
pub use state::AppState;
