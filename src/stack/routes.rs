//! Routes: which targets serve a model, and how a request finds them.

use std::collections::HashMap;

use tower_llm_fallback::{Fallback, Target};

use super::{StackError, TargetService, TargetServices};

/// Which targets a model's requests go to, in order, and the targets kept
/// for the two kinds of failure only some targets can serve.
///
/// ```
/// use tower_llm::stack::ModelRoute;
///
/// let route = ModelRoute::new("gpt-4o", ["openai", "azure"])
///     .context_length(["gemini-long"])
///     .content_filter(["local"]);
/// # let _ = route;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelRoute {
    pub(crate) model: String,
    pub(crate) targets: Vec<String>,
    pub(crate) context_length: Vec<String>,
    pub(crate) content_filter: Vec<String>,
}

impl ModelRoute {
    /// Requests for `model` go to `targets` in order. `model` is an exact
    /// name, a prefix ending in `*` (`gpt-4o*`), or `*` for every model no
    /// other route names.
    pub fn new<I, T>(model: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        ModelRoute {
            model: model.into(),
            targets: targets.into_iter().map(Into::into).collect(),
            ..ModelRoute::default()
        }
    }

    /// Targets tried, after the route's own, only for a request too long
    /// for the targets before them (context length exceeded).
    pub fn context_length<I, T>(mut self, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.context_length = targets.into_iter().map(Into::into).collect();
        self
    }

    /// Targets tried, after the route's own, only for a request an earlier
    /// target's content policy refused.
    pub fn content_filter<I, T>(mut self, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.content_filter = targets.into_iter().map(Into::into).collect();
        self
    }
}

/// The targets of `route`, in order, with the routing flags it adds, each
/// over the service its place calls for (see [`with_services`]).
pub(super) fn route_targets(
    route: &ModelRoute,
    targets: &[Target<TargetServices>],
) -> Result<Vec<Target<TargetService>>, StackError> {
    let find = |name: &str| {
        targets
            .iter()
            .find(|t| t.name() == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = targets.iter().map(Target::name).collect();
                StackError(format!(
                    "route `{}`: no target is named `{name}` (targets: {})",
                    route.model,
                    known.join(", ")
                ))
            })
    };
    let mut chosen: Vec<Target<TargetServices>> = Vec::new();
    for name in &route.targets {
        if !chosen.iter().any(|t| t.name() == name) {
            chosen.push(find(name)?);
        }
    }
    let flagged = [
        (&route.context_length, true),
        (&route.content_filter, false),
    ];
    let ordinary = chosen.len();
    for (names, context) in flagged {
        for name in names {
            let position = match chosen.iter().position(|t| t.name() == name) {
                Some(i) => i,
                None => {
                    chosen.push(find(name)?);
                    chosen.len() - 1
                }
            };
            let mut target = chosen.remove(position);
            target = if context {
                target.larger_context()
            } else {
                target.for_content_filter()
            };
            // Named only for this kind of failure: never in the default
            // order (an ordinary outage must not send everything there).
            if position >= ordinary {
                target = target.reserved();
            }
            chosen.insert(position, target);
        }
    }
    if chosen.is_empty() {
        return Err(StackError(format!(
            "route `{}`: a route needs at least one target",
            route.model
        )));
    }
    Ok(with_services(chosen, ordinary))
}

/// Every target, in the order added (a stack without routes).
pub(super) fn in_route_order(targets: Vec<Target<TargetServices>>) -> Vec<Target<TargetService>> {
    let ordinary = targets.len();
    with_services(targets, ordinary)
}

/// Each target over the service its place calls for: the first `ordinary`
/// are tried in order on any failure, so all but the last of them leave a
/// silent attempt to the next; the last, and the targets kept for one kind
/// of failure (an outage never reaches them), retry it.
fn with_services(
    targets: Vec<Target<TargetServices>>,
    ordinary: usize,
) -> Vec<Target<TargetService>> {
    targets
        .into_iter()
        .enumerate()
        .map(|(i, target)| {
            target.map_service(|services| {
                if i + 1 < ordinary {
                    services.moves_on
                } else {
                    services.last
                }
            })
        })
        .collect()
}

/// Every route of a stack, each a [`Fallback`] over its targets.
pub(crate) struct Routes {
    pub(super) exact: HashMap<Box<str>, Fallback<TargetService>>,
    pub(super) prefixes: Vec<(Box<str>, Fallback<TargetService>)>,
    pub(super) default: Option<Fallback<TargetService>>,
    pub(crate) max_body: usize,
}

impl Routes {
    /// The fallback serving `model`: exact name, longest prefix, default.
    pub(crate) fn pick(&self, model: Option<&str>) -> Option<&Fallback<TargetService>> {
        if let Some(model) = model {
            if let Some(exact) = self.exact.get(model) {
                return Some(exact);
            }
            if let Some((_, prefixed)) = self
                .prefixes
                .iter()
                .find(|(prefix, _)| model.starts_with(&**prefix))
            {
                return Some(prefixed);
            }
        }
        self.default.as_ref()
    }
}
