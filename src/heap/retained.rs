//! Retained sizes: the memory that would be freed if an object went ("this one dict retains
//! 340 MB"), from the dominator tree of the heap graph.
//!
//! The roots are every interpreter's `sys.modules`, the threads' frames, and every object
//! with references from outside the heap (a C extension's, the interpreter's own): freeing a
//! container does not free what native code also holds.

use super::dominators::{DominatorTree, SUPER_ROOT, dominator_tree, retained_sizes_by};
use super::graph::{HeapGraph, Kind};
use super::memory_use::vec_bytes;

pub struct Retention {
    pub tree: DominatorTree,
    /// Per node: its size plus that of everything only it keeps alive.
    pub retained: Vec<u64>,
    /// The most bytes the analysis held at once beside the graph (the dominator tree's
    /// working arrays, or the tree and the retained sizes).
    pub peak_bytes: u64,
}

impl Retention {
    pub fn of(graph: &HeapGraph) -> Retention {
        let mut roots: Vec<u32> = graph.roots.iter().map(|r| r.node()).collect();
        // Refcount above the heap's references first (cheap), then frames' share (a lookup).
        roots.extend(
            (0..graph.len() as u32).filter(|&i| graph.refcount(i) > graph.in_degree(i) && graph.external_refs(i) > 0),
        );
        let mut tree = dominator_tree(graph.len(), &roots, |v, out| out.extend(graph.edges_of(v).map(|e| e.target)));
        let roots_bytes = vec_bytes(&roots);
        drop(roots);
        let retained = retained_sizes_by(&tree, |v| graph.size(v));
        let peak_bytes = (tree.peak_bytes + roots_bytes).max(tree.heap_bytes() + vec_bytes(&retained));
        // The order served the sums; what follows needs only the idoms (4 bytes a node).
        tree.order = Vec::new();
        Retention { tree, retained, peak_bytes }
    }

    /// No retained sizes (`why --no-retained`): every node's is 0, and the analysis costs no
    /// memory.
    pub fn none() -> Retention {
        Retention {
            tree: DominatorTree { idom: Vec::new(), order: Vec::new(), peak_bytes: 0 },
            retained: Vec::new(),
            peak_bytes: 0,
        }
    }

    /// Node `i`'s retained size (0 without retained sizes).
    pub fn retained_of(&self, i: u32) -> u64 {
        self.retained.get(i as usize).copied().unwrap_or(0)
    }

    /// Bytes the tree and the retained sizes hold.
    pub fn heap_bytes(&self) -> u64 {
        self.tree.heap_bytes() + vec_bytes(&self.retained)
    }

    /// Per type: the memory freed if every object of the type went.
    pub fn by_type(&self, graph: &HeapGraph) -> Vec<u64> {
        self.by_group(graph.types.len(), |v| Some(graph.type_id(v as u32)))
    }

    /// The memory freed if all of `members` went.
    pub fn of_set(&self, graph: &HeapGraph, members: &[u32]) -> u64 {
        let mut member = vec![false; graph.len()];
        for &m in members {
            member[m as usize] = true;
        }
        self.by_group(1, |v| member[v].then_some(0))[0]
    }

    /// Per group: the retained sizes of its objects, leaving out objects dominated by another
    /// object of the same group (they are inside that one's retained size already).
    fn by_group(&self, groups: usize, group_of: impl Fn(usize) -> Option<usize>) -> Vec<u64> {
        let n = self.tree.idom.len();
        // Children of each node in the dominator tree (CSR), the super-root's last.
        let parent = |v: usize| match self.tree.idom[v] {
            d if d < SUPER_ROOT => d as usize,
            SUPER_ROOT => n,
            _ => usize::MAX,
        };
        let mut start = vec![0u32; n + 2];
        for v in 0..n {
            if let Some(s) = start.get_mut(parent(v) + 1) {
                *s += 1;
            }
        }
        for k in 1..start.len() {
            start[k] += start[k - 1];
        }
        let mut fill = start.clone();
        let mut children = vec![0u32; start[n + 1] as usize];
        for v in 0..n {
            if let Some(f) = fill.get_mut(parent(v)) {
                children[*f as usize] = v as u32;
                *f += 1;
            }
        }
        // Depth-first over the tree with, per type, how many objects of it are on the way down.
        let mut open = vec![0u32; groups];
        let mut by_group = vec![0u64; groups];
        let mut stack: Vec<(usize, bool)> = vec![(n, false)];
        while let Some((v, leaving)) = stack.pop() {
            let t = if v < n { group_of(v) } else { None };
            if leaving {
                if let Some(t) = t {
                    open[t] -= 1;
                }
                continue;
            }
            if let Some(t) = t {
                if open[t] == 0 {
                    by_group[t] += self.retained_of(v as u32);
                }
                open[t] += 1;
                stack.push((v, true));
            }
            for &c in &children[start[v] as usize..start[v + 1] as usize] {
                stack.push((c as usize, false));
            }
        }
        by_group
    }

    /// The `limit` objects that retain the most, leaving out what holds everything: roots,
    /// modules, classes and their namespaces, frames.
    pub fn largest(&self, graph: &HeapGraph, limit: usize) -> Vec<u32> {
        let mut namespace = vec![false; graph.len()];
        for &v in &graph.namespaces {
            if let Some(n) = namespace.get_mut(v as usize) {
                *n = true;
            }
        }
        for root in &graph.roots {
            namespace[root.node() as usize] = true;
        }
        let mut candidates: Vec<u32> = (0..graph.len() as u32)
            .filter(|&v| {
                !namespace[v as usize]
                    && !matches!(graph.type_info(v).kind, Kind::Module | Kind::Type | Kind::StackFrame)
                    && self.retained_of(v) > 0
            })
            .collect();
        candidates.sort_unstable_by_key(|&v| std::cmp::Reverse(self.retained_of(v)));
        candidates.truncate(limit);
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::graph::tests::graph_with;
    use crate::heap::graph::{Label, Root};

    #[test]
    fn retained_sizes_follow_dominators_and_outside_references() {
        // 0 sys.modules (dict) -> 1 list -> 2 and 3 (Node); 3 -> 4 (Node, nested in 3);
        // 1 -> 5 (str), which native code also holds (refcount 2, one heap reference).
        let types = [("dict", Kind::Dict), ("list", Kind::List), ("Node", Kind::Other), ("str", Kind::Leaf)];
        let nodes = [(0, 100, 1), (1, 50, 1), (2, 10, 1), (2, 10, 1), (2, 10, 1), (3, 1000, 2)];
        let edges = [
            (0, 1, Label::Key(0)),
            (1, 2, Label::Index(0)),
            (1, 3, Label::Index(1)),
            (3, 4, Label::Field(16)),
            (1, 5, Label::Index(2)),
        ];
        let g = graph_with(&types, &nodes, &edges, &[Root::Modules { node: 0, interpreter: 0 }]);
        let r = Retention::of(&g);
        assert_eq!(r.retained[1], 50 + 10 + 10 + 10, "the str is held from outside too: not the list's to free");
        assert_eq!(r.retained[3], 20);
        // Node 4 is inside node 3's retained size: counted once for the type.
        assert_eq!(r.by_type(&g)[2], 30);
        assert_eq!(r.of_set(&g, &[3, 5]), 1020);
        // The root is left out of the largest retainers.
        assert_eq!(r.largest(&g, 2), vec![5, 1]);
    }
}
