//! The process-wide "held A while taking B" graph between lock names, and
//! the search for a cycle when an edge is added.
//!
//! Nodes exist only for names that are in at least one edge, so a lock that
//! is never nested costs nothing here. Names are dynamic (`instance-<uuid>`),
//! so the graph is bounded: at most [`MAX_NAMES`] names and [`MAX_EDGES`]
//! edges. When either would be exceeded, the least recently used quarter of
//! the names is dropped with all their edges. Dropping edges can only hide
//! a cycle (a missed report), never invent one.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Site;

/// Most names kept in the graph (about 200 bytes each plus the name).
pub(crate) const MAX_NAMES: usize = 4096;
/// Most edges kept in the graph (about 80 bytes each).
pub(crate) const MAX_EDGES: usize = 65_536;
/// Most cycles remembered as already reported (for `Warn`).
const MAX_REPORTED: usize = 1024;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A lock held by the context taking another: its name and who took it.
pub(crate) trait Held {
    fn name(&self) -> &str;
    fn site(&self) -> Site;
}

/// A [`Held`] lock by value, for tests.
#[cfg(test)]
#[derive(Clone, Copy)]
pub(crate) struct HeldLock<'a> {
    pub(crate) name: &'a str,
    pub(crate) site: Site,
}

#[cfg(test)]
impl Held for HeldLock<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn site(&self) -> Site {
        self.site
    }
}

/// Who took the two ends of an edge.
#[derive(Clone, Copy)]
struct EdgeSites {
    /// Took the lock that was held.
    held: Site,
    /// Took the second lock while the first was held.
    taken: Site,
}

struct Node {
    name: Arc<str>,
    /// Edges out of this node, by target node.
    out: Vec<u32>,
    /// The graph's clock when an edge of this node was last added or seen
    /// (atomic, so that seeing known edges needs only a read lock).
    used: AtomicU64,
}

/// The graph. Callers hold it behind a lock; every method sees one
/// consistent state, so two threads adding A→B and B→A at the same time
/// are serialised and the second finds the cycle.
#[derive(Default)]
pub(crate) struct Graph {
    slots: Vec<Option<Node>>,
    free: Vec<u32>,
    ids: HashMap<Arc<str>, u32>,
    edges: HashMap<(u32, u32), EdgeSites>,
    clock: AtomicU64,
    /// Canonical forms of the cycles already reported.
    reported: HashSet<Vec<Arc<str>>>,
}

/// One edge of a reported cycle: `taken` was taken by `taken_site` while
/// `held` (taken by `held_site`) was held.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) held: Arc<str>,
    pub(crate) held_site: String,
    pub(crate) taken: Arc<str>,
    pub(crate) taken_site: String,
}

/// A cycle found when adding edges: the first step is the acquisition
/// being made, the others were recorded earlier, in the order that leads
/// back to the first step's held lock.
#[derive(Clone, Debug)]
pub(crate) struct Cycle {
    pub(crate) steps: Vec<Step>,
}

impl Cycle {
    /// Every lock of the cycle, starting at the lock being taken.
    pub(crate) fn locks(&self) -> Vec<&str> {
        self.steps.iter().map(|s| &*s.taken).collect()
    }

    /// The same cycle however it was entered: its names rotated so the
    /// smallest comes first.
    fn canonical(&self) -> Vec<Arc<str>> {
        let names: Vec<Arc<str>> = self.steps.iter().map(|s| s.taken.clone()).collect();
        let start = (0..names.len()).min_by_key(|&i| &names[i]).unwrap_or(0);
        names[start..]
            .iter()
            .chain(&names[..start])
            .cloned()
            .collect()
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lockutils: lock order cycle (possible deadlock) among {} locks: ",
            self.steps.len()
        )?;
        for s in &self.steps {
            write!(f, "{:?} -> ", &*s.held)?;
        }
        write!(f, "{:?}", &*self.steps[0].held)?;
        for (i, s) in self.steps.iter().enumerate() {
            let when = if i == 0 { "now" } else { "earlier" };
            write!(
                f,
                "\n  {when}: {:?} taken by {} while holding {:?} (taken by {})",
                &*s.taken, s.taken_site, &*s.held, s.held_site
            )?;
        }
        Ok(())
    }
}

impl Graph {
    fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn node(&self, id: u32) -> &Node {
        self.slots[id as usize].as_ref().expect("live node")
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        self.slots[id as usize].as_mut().expect("live node")
    }

    /// Whether every edge `held[i] → name` is already recorded (the common
    /// case once a program has run its code paths once).
    pub(crate) fn knows_all(&self, held: &[impl Held], name: &str) -> bool {
        let Some(to) = self.id(name) else {
            return held.iter().all(|h| h.name() == name);
        };
        held.iter().all(|h| {
            h.name() == name
                || self
                    .id(h.name())
                    .is_some_and(|from| self.edges.contains_key(&(from, to)))
        })
    }

    /// Looks for a cycle that the edges `held[i] → name` would close. The
    /// graph is not changed.
    pub(crate) fn find_cycle(&self, held: &[impl Held], name: &str, site: Site) -> Option<Cycle> {
        let to = self.id(name)?;
        // Held locks whose edge to `name` is new; an existing edge closed
        // no cycle when it was added (or was reported then).
        let targets: HashMap<u32, Site> = held
            .iter()
            .filter(|h| h.name() != name)
            .filter_map(|h| Some((self.id(h.name())?, h.site())))
            .filter(|(from, _)| !self.edges.contains_key(&(*from, to)))
            .collect();
        if targets.is_empty() {
            return None;
        }
        let path = self.shortest_path(to, |n| targets.contains_key(&n))?;
        let last = *path.last().unwrap_or(&to);
        let mut steps = vec![Step {
            held: self.node(last).name.clone(),
            held_site: targets[&last].to_string(),
            taken: self.node(to).name.clone(),
            taken_site: site.to_string(),
        }];
        let mut from = to;
        for &next in &path {
            let sites = self.edges[&(from, next)];
            steps.push(Step {
                held: self.node(from).name.clone(),
                held_site: sites.held.to_string(),
                taken: self.node(next).name.clone(),
                taken_site: sites.taken.to_string(),
            });
            from = next;
        }
        Some(Cycle { steps })
    }

    /// Breadth-first from `start`: the nodes after `start` on a shortest
    /// path to a node for which `goal` holds (so the cycle reported is the
    /// shortest one).
    fn shortest_path(&self, start: u32, goal: impl Fn(u32) -> bool) -> Option<Vec<u32>> {
        let mut parent: HashMap<u32, u32> = HashMap::default();
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            for &next in &self.node(n).out {
                if next == start || parent.contains_key(&next) {
                    continue;
                }
                parent.insert(next, n);
                if goal(next) {
                    let mut path = vec![next];
                    let mut at = next;
                    while let Some(&p) = parent.get(&at) {
                        if p == start {
                            break;
                        }
                        path.push(p);
                        at = p;
                    }
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(next);
            }
        }
        None
    }

    /// Records the edges `held[i] → name` (self-edges aside: re-taking a
    /// held lock is the re-entry check's business).
    pub(crate) fn add(&mut self, held: &[impl Held], name: &str, site: Site) {
        self.clock.fetch_add(1, Ordering::Relaxed);
        let new = held.iter().filter(|h| h.name() != name).count();
        self.make_room(new + 1, new);
        let to = self.intern(name);
        for h in held.iter().filter(|h| h.name() != name) {
            let from = self.intern(h.name());
            let sites = EdgeSites {
                held: h.site(),
                taken: site,
            };
            if self.edges.insert((from, to), sites).is_none() {
                self.node_mut(from).out.push(to);
            }
        }
    }

    /// Marks `names` as used now (they were nested again), so eviction
    /// keeps them.
    ///
    /// The clock only moves when edges are added, so a program whose edges
    /// are all known writes nothing shared here.
    pub(crate) fn touch<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let now = self.clock.load(Ordering::Relaxed);
        for n in names {
            if let Some(id) = self.id(n) {
                let used = &self.node(id).used;
                if used.load(Ordering::Relaxed) != now {
                    used.store(now, Ordering::Relaxed);
                }
            }
        }
    }

    /// Remembers that `cycle` was reported; false if it already was.
    pub(crate) fn first_report(&mut self, cycle: &Cycle) -> bool {
        if self.reported.len() >= MAX_REPORTED {
            // Forgetting may repeat a warning; it never hides a new cycle.
            self.reported.clear();
        }
        self.reported.insert(cycle.canonical())
    }

    fn intern(&mut self, name: &str) -> u32 {
        let now = self.clock.load(Ordering::Relaxed);
        if let Some(id) = self.id(name) {
            self.node(id).used.store(now, Ordering::Relaxed);
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let node = Node {
            name: name.clone(),
            out: Vec::new(),
            used: AtomicU64::new(now),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(node);
                id
            }
            None => {
                self.slots.push(Some(node));
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(name, id);
        id
    }

    /// Drops the least recently used quarter of the names if `names` more
    /// names or `edges` more edges would exceed the bounds.
    fn make_room(&mut self, names: usize, edges: usize) {
        if self.ids.len() + names <= MAX_NAMES && self.edges.len() + edges <= MAX_EDGES {
            return;
        }
        let mut by_age: Vec<(u64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((n.as_ref()?.used.load(Ordering::Relaxed), i as u32)))
            .collect();
        by_age.sort_unstable();
        let victims: HashSet<u32> = by_age
            .iter()
            .take(by_age.len().div_ceil(4))
            .map(|&(_, id)| id)
            .collect();
        self.edges
            .retain(|(a, b), _| !victims.contains(a) && !victims.contains(b));
        for &id in &victims {
            if let Some(node) = self.slots[id as usize].take() {
                self.ids.remove(&node.name);
                self.free.push(id);
            }
        }
        for node in self.slots.iter_mut().flatten() {
            node.out.retain(|n| !victims.contains(n));
        }
    }

    /// Number of names and edges kept (for tests and the docs' figures).
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.ids.len(), self.edges.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Site = Site::Function("f");
    const G: Site = Site::Function("g");

    fn held(names: &[&'static str], site: Site) -> Vec<HeldLock<'static>> {
        names.iter().map(|&name| HeldLock { name, site }).collect()
    }

    #[test]
    fn two_lock_inversion_is_a_cycle_naming_both_sites() {
        let mut g = Graph::default();
        g.add(&held(&["a"], F), "b", F);
        let c = g.find_cycle(&held(&["b"], G), "a", G).expect("cycle");
        assert_eq!(c.locks(), ["a", "b"]);
        let text = c.to_string();
        assert!(
            text.contains("\"a\" taken by g while holding \"b\" (taken by g)"),
            "{text}"
        );
        assert!(
            text.contains("\"b\" taken by f while holding \"a\" (taken by f)"),
            "{text}"
        );
    }

    #[test]
    fn longer_cycles_are_found_and_consistent_orders_are_not() {
        let mut g = Graph::default();
        g.add(&held(&["a"], F), "b", F);
        g.add(&held(&["b"], F), "c", F);
        g.add(&held(&["c"], F), "d", F);
        assert!(g.find_cycle(&held(&["a", "b"], F), "d", F).is_none());
        assert!(g.find_cycle(&held(&["a"], F), "c", F).is_none());
        let c = g.find_cycle(&held(&["d"], G), "a", G).expect("cycle");
        assert_eq!(c.locks(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn the_shortest_cycle_is_reported() {
        let mut g = Graph::default();
        for (x, y) in [("a", "b"), ("b", "c"), ("c", "d"), ("b", "d")] {
            g.add(&held(&[x], F), y, F);
        }
        let c = g.find_cycle(&held(&["d"], G), "a", G).expect("cycle");
        assert_eq!(c.locks(), ["a", "b", "d"]);
    }

    #[test]
    fn known_edges_and_self_edges() {
        let mut g = Graph::default();
        assert!(g.knows_all(&held(&["a"], F), "a"));
        assert!(!g.knows_all(&held(&["a"], F), "b"));
        g.add(&held(&["a", "b"], F), "b", F);
        assert!(g.knows_all(&held(&["a"], F), "b"));
        assert_eq!(g.size(), (2, 1));
    }

    #[test]
    fn a_cycle_is_reported_once_however_it_is_entered() {
        let mut g = Graph::default();
        g.add(&held(&["a"], F), "b", F);
        g.add(&held(&["b"], F), "c", F);
        let c = g.find_cycle(&held(&["c"], G), "a", G).expect("cycle");
        assert!(g.first_report(&c));
        assert!(!g.first_report(&c));
        let mut g2 = Graph::default();
        g2.add(&held(&["c"], F), "a", F);
        g2.add(&held(&["a"], F), "b", F);
        let rotated = g2.find_cycle(&held(&["b"], G), "c", G).expect("cycle");
        assert!(!g.first_report(&rotated));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "12,000 names and their edges take hours under Miri; no unsafe code here"
    )]
    fn dynamic_names_stay_bounded_and_recent_edges_survive() {
        let mut g = Graph::default();
        g.add(&held(&["iptables"], F), "keep", F);
        for i in 0..3 * MAX_NAMES {
            let name = format!("instance-{i}");
            g.add(
                &[HeldLock {
                    name: &name,
                    site: F,
                }],
                "iptables",
                F,
            );
            // The program keeps using its static pair.
            g.touch(["iptables", "keep"].into_iter());
        }
        let (names, edges) = g.size();
        assert!(names <= MAX_NAMES && edges <= MAX_EDGES, "{names} {edges}");
        assert!(g.knows_all(&held(&["iptables"], F), "keep"));
        assert!(g.find_cycle(&held(&["keep"], G), "iptables", G).is_some());
        let last = format!("instance-{}", 3 * MAX_NAMES - 1);
        assert!(g.knows_all(
            &[HeldLock {
                name: &last,
                site: F
            }],
            "iptables"
        ));
    }
}
