//! Routes become strata: each route is compared with its own baseline, so a shift in the mix of
//! routes is not mistaken for a regression. The number of strata is bounded.

use std::collections::HashMap;

/// Name of the stratum for observations that carry no route.
pub const UNROUTED: &str = "*";
/// Name of the stratum shared by routes past the limit.
pub const OVERFLOW: &str = "(other routes)";

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Strata {
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    max_routes: usize,
}

impl Strata {
    pub fn new(max_routes: usize) -> Self {
        Strata {
            names: Vec::new(),
            by_name: HashMap::new(),
            max_routes: max_routes.max(1),
        }
    }

    /// The stratum of a route, creating it while there is room.
    pub fn id(&mut self, route: Option<&str>) -> usize {
        let name = route.unwrap_or(UNROUTED);
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let name = if self.names.len() >= self.max_routes {
            OVERFLOW
        } else {
            name
        };
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.names.len();
        self.names.push(name.to_owned());
        self.by_name.insert(name.to_owned(), id);
        id
    }

    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_past_the_limit_share_one_stratum() {
        let mut s = Strata::new(2);
        let a = s.id(Some("/a"));
        let b = s.id(None);
        assert_ne!(a, b);
        assert_eq!(s.id(Some("/a")), a);
        let c = s.id(Some("/c"));
        let d = s.id(Some("/d"));
        assert_eq!(c, d);
        assert_eq!(s.name(c), OVERFLOW);
        assert_eq!(s.len(), 3);
    }
}
