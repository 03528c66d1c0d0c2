//! Routes: which targets serve a model, and how a request finds them.

use std::collections::HashMap;

use tower_llm_fallback::{Fallback, Strategy, Target};

use super::{StackError, TargetService, TargetServices};

/// Which targets a model's requests go to, in order, and the targets kept
/// for the two kinds of failure only some targets can serve.
///
/// The targets are tried in order; a [group](ModelRoute::group) of
/// equivalent targets (the same model on several keys, regions or
/// providers) takes one place in that order, and each request goes to the
/// member its [`Strategy`] picks among those available (see
/// [`group`](tower_llm_fallback::group)).
///
/// ```
/// use tower_llm::fallback::Strategy;
/// use tower_llm::stack::ModelRoute;
///
/// let route = ModelRoute::new("gpt-4o", ["openai", "azure"])
///     .context_length(["gemini-long"])
///     .content_filter(["local"]);
/// # let _ = route;
///
/// // Three deployments picked by latency, then a local model.
/// let route = ModelRoute::new("gpt-4o", Vec::<String>::new())
///     .group(Strategy::Latency, ["azure-eu", "azure-us", "openai"])
///     .then("local");
/// assert_eq!(route.targets(), ["azure-eu", "azure-us", "openai", "local"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelRoute {
    pub(crate) model: String,
    /// The groups in order (a target named alone is a group of one).
    pub(crate) groups: Vec<(Strategy, Vec<String>)>,
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
            groups: targets
                .into_iter()
                .map(|t| (Strategy::default(), vec![t.into()]))
                .collect(),
            ..ModelRoute::default()
        }
    }

    /// Adds `target` after the route's targets and groups.
    pub fn then(mut self, target: impl Into<String>) -> Self {
        self.groups.push((Strategy::default(), vec![target.into()]));
        self
    }

    /// Adds a group of equivalent `targets` after the route's targets and
    /// groups: each request tries the member `strategy` picks among those
    /// available (breaker closed, not cooling down, not paced out), then
    /// the others, before what comes after the group.
    pub fn group<I, T>(mut self, strategy: Strategy, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.groups
            .push((strategy, targets.into_iter().map(Into::into).collect()));
        self
    }

    /// The route's targets in order, groups flattened (without the
    /// targets kept for context length or content filter).
    pub fn targets(&self) -> Vec<&str> {
        self.groups
            .iter()
            .flat_map(|(_, names)| names.iter().map(String::as_str))
            .collect()
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

/// A route's targets, grouped: each group's strategy and members, in
/// order.
pub(super) type Grouped = Vec<(Strategy, Vec<Target<TargetService>>)>;

/// The targets of `route`, in order, with the routing flags it adds, each
/// over the service its place calls for (see [`with_services`]), in its
/// groups (a target named twice is kept at its first place).
pub(super) fn route_targets(
    route: &ModelRoute,
    targets: &[Target<TargetServices>],
) -> Result<Grouped, StackError> {
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
    let mut sizes: Vec<(Strategy, usize)> = Vec::new();
    for (strategy, names) in &route.groups {
        let before = chosen.len();
        for name in names {
            if !chosen.iter().any(|t| t.name() == name) {
                chosen.push(find(name)?);
            }
        }
        if chosen.len() > before {
            sizes.push((*strategy, chosen.len() - before));
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
                    sizes.push((Strategy::default(), 1));
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
    // Targets named only for a context too long or a filtered answer are
    // never in the default order: with no other, nothing is ever sent.
    if ordinary == 0 {
        return Err(StackError(format!(
            "route `{}`: its targets are all for a context too long or a filtered answer; \
             a route needs a target (or a group) to send requests to first",
            route.model
        )));
    }
    Ok(grouped(with_services(chosen, ordinary, &sizes), &sizes))
}

/// Every target, in the order added, each a group of one (a stack without
/// routes).
pub(super) fn in_route_order(targets: Vec<Target<TargetServices>>) -> Grouped {
    let ordinary = targets.len();
    let sizes = vec![(Strategy::default(), 1); ordinary];
    grouped(with_services(targets, ordinary, &sizes), &sizes)
}

/// `targets` cut into groups of `sizes`.
fn grouped(targets: Vec<Target<TargetService>>, sizes: &[(Strategy, usize)]) -> Grouped {
    let mut targets = targets.into_iter();
    sizes
        .iter()
        .map(|(strategy, len)| (*strategy, targets.by_ref().take(*len).collect()))
        .collect()
}

/// Each target over the service its place calls for: the first `ordinary`
/// are tried in order on any failure, so all but the last of them leave a
/// silent attempt (or a long hint) to the next; the last, and the targets
/// kept for one kind of failure (an outage never reaches them), retry it.
/// In a group of two or more, where the order is the request's pick, each
/// member leaves it to its siblings and, in the route's last ordinary
/// group, retries it as its [`last_chance`](Target::last_chance) once no
/// sibling is left: which member that is, the request decides.
fn with_services(
    targets: Vec<Target<TargetServices>>,
    ordinary: usize,
    sizes: &[(Strategy, usize)],
) -> Vec<Target<TargetService>> {
    // Each target's group: its first index and length.
    let mut spans = Vec::with_capacity(targets.len());
    let mut start = 0;
    for &(_, len) in sizes {
        spans.extend(std::iter::repeat_n((start, len), len));
        start += len;
    }
    targets
        .into_iter()
        .enumerate()
        .map(|(i, target)| {
            let (start, len) = spans.get(i).copied().unwrap_or((i, 1));
            if len < 2 {
                return target.map_service(|services| {
                    if i + 1 < ordinary {
                        services.moves_on
                    } else {
                        services.last
                    }
                });
            }
            let mut last = None;
            let target = target.map_service(|services| {
                last = Some(services.last);
                services.moves_on
            });
            match last {
                Some(last) if start + len >= ordinary => target.last_chance(last),
                _ => target,
            }
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
