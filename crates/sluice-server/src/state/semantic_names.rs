//! The semantic stages' models, checked once the names are built (configured models, local
//! models found on disk, passthrough providers, routes): each embedding model must be one
//! that a client could call (a route only when its targets are one model: vectors of two
//! models cannot be compared), and each reranker a cross-encoder sluice runs itself. A config
//! that names another is refused at start and at reload, naming the stage.

use super::plan::{Names, Resolved};
use sluice_core::config::CachePolicy;
use sluice_core::{Error, ErrorKind};

fn refused(at: &str, message: String) -> Error {
    ErrorKind::Internal {
        message: format!("invalid config: {at}.semantic: {message}"),
    }
    .into()
}

/// Checks the semantic stage of `global` (`[cache]`'s) and of every model and route.
pub(super) fn check(names: &Names<'_>, global: &CachePolicy) -> Result<(), Error> {
    let models = names
        .deployments
        .iter()
        .map(|d| (format!("model `{}`'s cache", d.name), &d.cache));
    let routes = names.routes.iter().map(|r| {
        (
            format!("route `{}`'s cache", r.config.name),
            &r.config.cache,
        )
    });
    let policies = std::iter::once(("[cache]".to_owned(), global)).chain(models.chain(routes));
    for (at, policy) in policies {
        let Some(s) = &policy.semantic else {
            continue;
        };
        match names.resolve(&s.model) {
            Err(_) => {
                let message = format!("`model` `{}` is no model or route sluice serves", s.model);
                return Err(refused(&at, message));
            }
            Ok(Resolved::Route(r)) if !one_model(names, r) => {
                let message = format!(
                    "`model` `{}` is a route whose targets are different models: their vectors \
                     cannot be compared",
                    s.model
                );
                return Err(refused(&at, message));
            }
            Ok(_) => {}
        }
        let Some(reranker) = &s.reranker else {
            continue;
        };
        let local = match names.resolve(&reranker.model) {
            Ok(Resolved::Model(d)) => names.providers[names.deployments[d].provider].is_local(),
            _ => false,
        };
        if !local {
            let message = format!(
                "`reranker` `{}` is not a local model (a cross-encoder sluice runs itself)",
                reranker.model
            );
            return Err(refused(&at, message));
        }
    }
    Ok(())
}

/// Whether route `r`'s targets (its canary's too) all ask their upstreams for one model.
fn one_model(names: &Names<'_>, r: usize) -> bool {
    let route = &names.routes[r].config;
    let canary = route.canary.as_ref().map(|c| c.target);
    let mut upstreams = route
        .targets
        .iter()
        .copied()
        .chain(canary)
        .map(|d| &*names.deployments[d].upstream);
    let first = upstreams.next();
    upstreams.all(|u| Some(u) == first)
}
