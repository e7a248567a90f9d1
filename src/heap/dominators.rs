//! Dominator tree of the heap graph, so that leakspy can say how much memory an object retains.
//!
//! An object's retained size is what the process would get back if that object went: the object
//! and everything that can only be reached through it. "Only through it" is dominance, and the
//! nodes an object dominates are its subtree in the dominator tree, so retained sizes are one
//! bottom-up sum over that tree.
//!
//! The tree is computed with the iterative algorithm of Cooper, Harvey and Kennedy, pushed along
//! the successors (see [`iterative`]): it needs no predecessor lists, so it holds 12 bytes per
//! reachable node where Lengauer-Tarjan held about 36 plus 4 per edge, which on a heap of tens of
//! millions of objects is the difference between fitting and not. Each pass walks every edge; a
//! heap settles in two or three, the DFS tree being most of the dominator tree already. On shapes
//! that would need many (it is quadratic at worst), after [`MAX_PASSES`] passes, Lengauer-Tarjan
//! takes over (the "simple" version, path compression without balancing, O(m log n)): same
//! answer, at its memory.
//!
//! Nothing here recurses: a Python heap can hold a linked list millions of objects long, which is
//! a DFS path and a compression path of that length, far beyond any thread's stack. Every walk
//! keeps its stack in a `Vec`.
//!
//! A heap has several roots (modules, frames, objects referenced from outside the heap), so the
//! graph gets a virtual super-root with an edge to each of them; a root's immediate dominator is
//! that super-root, reported as [`SUPER_ROOT`].

use super::memory_use::{Peak, vec_bytes};

/// idom value of a root (its parent is the virtual super-root that links to every root).
pub const SUPER_ROOT: u32 = u32::MAX - 1;
/// idom value of a node no root reaches.
pub const UNREACHABLE: u32 = u32::MAX;

/// "No vertex" among DFS numbers. DFS numbers stay below it because node ids stop before the
/// sentinels, so the count of numbered vertices (nodes plus the super-root) fits.
const NONE: u32 = u32::MAX;

/// The dominator tree of a graph with a virtual super-root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DominatorTree {
    /// Immediate dominator of each node: another node, SUPER_ROOT, or UNREACHABLE.
    pub idom: Vec<u32>,
    /// Reachable nodes in an order where every node comes after its immediate dominator (e.g. DFS preorder).
    pub order: Vec<u32>,
    /// The most bytes the computation's working arrays held at once (the result's included):
    /// with the graph's own, the peak of a retained-size analysis.
    pub peak_bytes: u64,
}

/// Computes the dominator tree of the graph of `node_count` nodes whose edges `successors` gives,
/// as seen from `roots` (all of them hang from one virtual super-root; repeats are harmless).
///
/// `successors(v, out)` pushes v's successors onto `out`. Duplicates and self-loops are fine, and
/// ids `>= node_count` are ignored, so a callback can hand over raw reference lists. It is called
/// only for nodes reachable from the roots: once for the depth-first numbering, then once per
/// pass (two or three on a heap; Lengauer-Tarjan, if it takes over, calls it twice more). Asking
/// again is cheaper than holding a copy of every edge. The callback must give the same successors
/// every time; if it does not, the tree is wrong but nothing panics or loops.
///
/// Ids `SUPER_ROOT` and `UNREACHABLE` are the sentinels, so at most `SUPER_ROOT` nodes are
/// considered: a larger `node_count` is cut down to that (and `idom` is that long).
pub fn dominator_tree(node_count: usize, roots: &[u32], successors: impl FnMut(u32, &mut Vec<u32>)) -> DominatorTree {
    dominator_tree_within(node_count, roots, successors, MAX_PASSES)
}

/// Passes of the iterative algorithm before it gives way to Lengauer-Tarjan. Heaps converge in
/// two or three (the last one only checks); a crafted shape that needs more costs a pass each.
const MAX_PASSES: usize = 6;

/// Steps up the tree the iterative algorithm may take per reachable vertex, over all its
/// passes, before Lengauer-Tarjan takes over: heaps take a few.
const STEPS_PER_VERTEX: u64 = 64;

/// [`dominator_tree`] with the iterative algorithm allowed `max_passes` passes (tests force
/// the fallback with 1).
fn dominator_tree_within(
    node_count: usize,
    roots: &[u32],
    mut successors: impl FnMut(u32, &mut Vec<u32>),
    max_passes: usize,
) -> DominatorTree {
    let node_count = node_count.min(SUPER_ROOT as usize);
    let mut peak = Peak::default();
    let Some((vertex, idom_by_number)) = iterative(node_count, roots, &mut successors, max_passes, &mut peak) else {
        let mut tree = lengauer_tarjan_tree(node_count, roots, successors);
        tree.peak_bytes = tree.peak_bytes.max(peak.0);
        return tree;
    };
    tree_from_numbering(node_count, vertex, idom_by_number, peak)
}

/// The iterative algorithm of Cooper, Harvey and Kennedy ("A simple, fast dominance
/// algorithm"), pushed along the successors rather than pulled from predecessors, so that no
/// predecessor lists are built: 12 bytes a reachable node (number, vertex, idom) where
/// Lengauer-Tarjan needs about 36 plus 4 per edge.
///
/// Vertices are numbered in reverse postorder of a depth-first search from the super-root
/// (number 0), and each one's idom starts as its DFS parent. A pass then takes every edge
/// u -> w and moves idom(w) up to the nearest common ancestor of idom(w) and u in the current
/// tree. Every estimate stays a chain of DFS ancestors that holds all true dominators (a
/// dominator of w that is a DFS ancestor of some estimate of it dominates that estimate too),
/// so the pass that changes nothing ends on the dominator tree. Estimates only move up, and
/// numbers of ancestors are smaller, so the common ancestor is found by walking the larger
/// number up. Returns (vertex, idom) by number, or `None` when `max_passes` did not settle it.
fn iterative(
    node_count: usize,
    roots: &[u32],
    successors: &mut impl FnMut(u32, &mut Vec<u32>),
    max_passes: usize,
    peak: &mut Peak,
) -> Option<(Vec<u32>, Vec<u32>)> {
    let PostOrder { number, mut vertex, mut idom } = post_order(node_count, roots, successors, peak);
    // Reverse postorder, then the DFS parents in those numbers.
    let mut number = number;
    let count = vertex.len();
    vertex[1..].reverse();
    idom[1..].reverse();
    for (k, &v) in vertex.iter().enumerate().skip(1) {
        number[v as usize] = k as u32;
    }
    for d in idom.iter_mut().skip(1) {
        *d = if *d == SUPER_ROOT { 0 } else { number[*d as usize] };
    }
    idom[0] = 0;
    // A root another root's walk reached first is still dominated by the super-root alone.
    for &r in roots {
        if let Some(&k) = number.get(r as usize)
            && (k as usize) < count
        {
            idom[k as usize] = 0;
        }
    }
    peak.at(vec_bytes(&number) + vec_bytes(&vertex) + vec_bytes(&idom));
    let mut buffer = Vec::new();
    // Steps up the tree, all passes together: a walk is as long as the tree is deep, and a deep
    // tree whose nodes all refer to one object near its top (a linked list of nodes sharing a
    // value) makes every walk that long, quadratic in one pass. Past this, Lengauer-Tarjan.
    let mut steps_left = STEPS_PER_VERTEX.saturating_mul(count as u64);
    for _ in 0..max_passes {
        let mut changed = false;
        for (k, &v) in vertex.iter().enumerate().skip(1) {
            buffer.clear();
            successors(v, &mut buffer);
            for &w in &buffer {
                let Some(&j) = number.get(w as usize) else { continue };
                let j = j as usize;
                // Only reachable nodes are numbered; roots stay under the super-root.
                if j >= count || j == k || idom[j] == 0 {
                    continue;
                }
                let mut a = idom[j];
                let mut b = k as u32;
                while a != b {
                    while a > b {
                        a = idom[a as usize];
                        steps_left = steps_left.checked_sub(1)?;
                    }
                    while b > a {
                        b = idom[b as usize];
                        steps_left = steps_left.checked_sub(1)?;
                    }
                }
                if a != idom[j] {
                    idom[j] = a;
                    changed = true;
                }
            }
        }
        if !changed {
            return Some((vertex, idom));
        }
    }
    None
}

/// A depth-first postorder of the nodes reachable from the roots.
struct PostOrder {
    /// Indexed by node id: NONE if not reached (after the walk, any other value).
    number: Vec<u32>,
    /// Node id by postorder position + 1 (entry 0 is the super-root's placeholder).
    vertex: Vec<u32>,
    /// DFS parent (a node id, or SUPER_ROOT) by the same position.
    idom: Vec<u32>,
}

/// Walks the graph depth first from the roots, in the order the callback gives successors,
/// calling it once per reachable node; the stack holds, per node on the current path, the
/// successors not looked at yet (see [`depth_first`]).
fn post_order(
    node_count: usize,
    roots: &[u32],
    successors: &mut impl FnMut(u32, &mut Vec<u32>),
    peak: &mut Peak,
) -> PostOrder {
    const ENTERED: u32 = NONE - 1;
    let mut number = vec![NONE; node_count];
    let mut vertex = vec![SUPER_ROOT];
    let mut idom = vec![SUPER_ROOT];
    let mut pending: Vec<u32> = roots.iter().rev().copied().filter(|&r| (r as usize) < node_count).collect();
    // (node, where its pending successors start): the current DFS path.
    let mut path: Vec<(u32, u32)> = vec![(SUPER_ROOT, 0)];
    let mut buffer = Vec::new();
    while let Some(&(current, start)) = path.last() {
        if pending.len() <= start as usize {
            path.pop();
            if let Some(&(parent, _)) = path.last() {
                grow(&mut vertex);
                grow(&mut idom);
                vertex.push(current);
                idom.push(parent);
            }
            continue;
        }
        let Some(v) = pending.pop() else { break };
        if number[v as usize] != NONE {
            continue;
        }
        number[v as usize] = ENTERED;
        buffer.clear();
        successors(v, &mut buffer);
        let start = pending.len();
        for &w in buffer.iter().rev() {
            if w != v && number.get(w as usize) == Some(&NONE) {
                pending.push(w);
            }
        }
        path.push((v, start as u32));
    }
    vertex.shrink_to_fit();
    idom.shrink_to_fit();
    // Capacities only grow: at the end they are the most the stacks held.
    peak.at(vec_bytes(&number) + vec_bytes(&vertex) + vec_bytes(&idom) + vec_bytes(&pending) + vec_bytes(&path));
    PostOrder { number, vertex, idom }
}

/// Room for one more, a quarter more at a time: these arrays are a node each.
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 4 + 1024);
    }
}

/// Lengauer-Tarjan, for the shapes the iterative algorithm does not settle in a few passes.
fn lengauer_tarjan_tree(
    node_count: usize,
    roots: &[u32],
    mut successors: impl FnMut(u32, &mut Vec<u32>),
) -> DominatorTree {
    let mut peak = Peak::default();
    let DepthFirst { mut nodes, vertex, parent, working_bytes } = depth_first(node_count, roots, &mut successors);
    let numbering = vec_bytes(&nodes) + vec_bytes(&vertex) + vec_bytes(&parent);
    peak.at(numbering + working_bytes);
    let predecessors = Predecessors::build(&mut nodes, &vertex, roots, &mut successors);
    peak.at(numbering + predecessors.heap_bytes());
    drop(nodes);
    let lists = vec_bytes(&vertex) + predecessors.heap_bytes();
    let idom_by_number = lengauer_tarjan(parent, &predecessors, &mut |bytes| peak.at(lists + bytes));
    drop(predecessors);
    tree_from_numbering(node_count, vertex, idom_by_number, peak)
}

/// The tree by node id, from both algorithms' result by DFS number (`vertex[n]` is the node
/// numbered n, number 0 the super-root). The numbering (preorder or reverse postorder) puts
/// every node after its DFS ancestors, and a dominator is always one of those: it is the order.
fn tree_from_numbering(node_count: usize, vertex: Vec<u32>, idom_by_number: Vec<u32>, mut peak: Peak) -> DominatorTree {
    let mut idom = vec![UNREACHABLE; node_count];
    peak.at(vec_bytes(&vertex) + vec_bytes(&idom_by_number) + vec_bytes(&idom));
    for (&v, &d) in vertex.iter().zip(&idom_by_number).skip(1) {
        idom[v as usize] = if d == 0 { SUPER_ROOT } else { vertex[d as usize] };
    }
    let mut order = vertex;
    order.remove(0);
    DominatorTree { idom, order, peak_bytes: peak.0 }
}

impl DominatorTree {
    /// Bytes the tree holds.
    pub fn heap_bytes(&self) -> u64 {
        vec_bytes(&self.idom) + vec_bytes(&self.order)
    }
}

/// Retained size of every node: its own size plus the sizes of all nodes it dominates (0 for unreachable nodes).
///
/// `shallow` is indexed by node; a missing entry counts as 0. Sums saturate rather than wrap, so
/// a corrupt size shows up as a huge number and not as a small plausible one.
pub fn retained_sizes(tree: &DominatorTree, shallow: &[u64]) -> Vec<u64> {
    retained_sizes_by(tree, |v| shallow.get(v as usize).copied().unwrap_or(0))
}

/// As [`retained_sizes`], with each node's own size given by `shallow` (called once per
/// reachable node), so the graph can keep its sizes in whatever compact form it likes.
pub fn retained_sizes_by(tree: &DominatorTree, shallow: impl Fn(u32) -> u64) -> Vec<u64> {
    let mut retained = vec![0u64; tree.idom.len()];
    for &v in &tree.order {
        if let Some(size) = retained.get_mut(v as usize) {
            *size = shallow(v);
        }
    }
    // Walking the order backwards finishes every node's subtree before its dominator takes it.
    for &v in tree.order.iter().rev() {
        let (Some(&size), Some(&d)) = (retained.get(v as usize), tree.idom.get(v as usize)) else {
            continue;
        };
        if d < SUPER_ROOT
            && let Some(total) = retained.get_mut(d as usize)
        {
            *total = total.saturating_add(size);
        }
    }
    retained
}

/// What the two passes over the edges need to know of a node, side by side: both are read for
/// the same successor, and on a large heap each separate array would be a separate cache miss.
#[derive(Debug, Clone, Copy)]
struct NodeState {
    /// DFS number, NONE while (or if) no root reaches the node.
    number: u32,
    /// Edges into the node from reachable nodes, root edges included: counted by the first pass
    /// so that the predecessor lists can be allocated exactly, then counted down by the second.
    in_degree: u32,
}

/// The depth-first numbering Lengauer-Tarjan rests on: semidominators are defined by DFS numbers,
/// and the algorithm works on numbers, not node ids. Number 0 is the super-root.
struct DepthFirst {
    /// Indexed by node id.
    nodes: Vec<NodeState>,
    /// Node id of each DFS number; entry 0 (the super-root) is a placeholder.
    vertex: Vec<u32>,
    /// DFS-tree parent of each DFS number, itself a DFS number.
    parent: Vec<u32>,
    /// The most bytes the walk's own stacks held.
    working_bytes: u64,
}

/// Numbers the nodes reachable from `roots` in depth-first preorder, calling `successors` once per
/// reachable node.
///
/// The stack holds, for every node on the current DFS path, the successors it has not looked at
/// yet: a node's list is pushed when it is entered and used up before the node is left, so lists
/// nest and one `Vec` holds them all. That keeps the callback's contract simple (one call per node
/// fills a buffer) while memory stays bounded by the edges along the current path, not by all edges.
fn depth_first(node_count: usize, roots: &[u32], successors: &mut impl FnMut(u32, &mut Vec<u32>)) -> DepthFirst {
    let mut nodes = vec![NodeState { number: NONE, in_degree: 0 }; node_count];
    let mut vertex = vec![SUPER_ROOT];
    let mut parent = vec![0u32];

    let mut pending: Vec<u32> = Vec::new();
    // (DFS number, where its pending successors start): the current DFS path.
    let mut path: Vec<(u32, usize)> = vec![(0, 0)];
    let mut buffer = Vec::new();

    // The super-root's successors are the roots, reversed so that popping enters them in order.
    for &root in roots.iter().rev() {
        if let Some(node) = nodes.get_mut(root as usize) {
            node.in_degree = node.in_degree.saturating_add(1);
            pending.push(root);
        }
    }

    while let Some(&(current, start)) = path.last() {
        if pending.len() <= start {
            path.pop();
            continue;
        }
        let Some(v) = pending.pop() else { break };
        // Only ids below node_count are ever pushed. Checked again here because the node may
        // have been entered through another path since it was pushed.
        let node = &mut nodes[v as usize];
        if node.number != NONE {
            continue;
        }
        let k = vertex.len() as u32;
        node.number = k;
        vertex.push(v);
        parent.push(current);

        buffer.clear();
        successors(v, &mut buffer);
        let start = pending.len();
        for &w in &buffer {
            if w != v
                && let Some(node) = nodes.get_mut(w as usize)
            {
                node.in_degree = node.in_degree.saturating_add(1);
                // Already numbered: the edge still counts as a predecessor, but there is nothing
                // to enter, and skipping it keeps the stack short.
                if node.number == NONE {
                    pending.push(w);
                }
            }
        }
        // Reversed so that popping follows the callback's order, which makes the numbering (and
        // so `order`) read naturally; any order would be a valid DFS.
        pending[start..].reverse();
        path.push((k, start));
    }
    // Capacities only grow: at the end they are the most the stacks held.
    let working_bytes = vec_bytes(&pending) + vec_bytes(&path);
    DepthFirst { nodes, vertex, parent, working_bytes }
}

/// Predecessor lists by DFS number, in one flat array (CSR): the semidominator step walks each
/// vertex's predecessors, and a `Vec` per vertex would cost an allocation and 24 bytes per node.
struct Predecessors {
    /// Predecessors of vertex k are `from[start[k]..start[k + 1]]`, NONE entries skipped.
    /// 32 bits: the heap graph's edges are counted in 32 bits too.
    start: Vec<u32>,
    /// DFS numbers of predecessors. NONE marks a slot the callback did not fill the second time.
    from: Vec<u32>,
}

impl Predecessors {
    /// Fills the lists with a second pass of `successors`, at the sizes counted by the first.
    ///
    /// Only edges from reachable nodes are kept: an unreachable predecessor cannot lie on a path
    /// from the roots, so it has no say in dominance. Lists are indexed by DFS number so that the
    /// main loop, which runs over DFS numbers, reads them in order.
    fn build(
        nodes: &mut [NodeState],
        vertex: &[u32],
        roots: &[u32],
        successors: &mut impl FnMut(u32, &mut Vec<u32>),
    ) -> Predecessors {
        // start[k + 1] begins as the start of k's list and advances as it is filled, ending at
        // the start of k + 1's: one array serves as both offsets and fill cursors.
        let mut start = vec![0u32; vertex.len() + 1];
        let mut total = 0u32;
        for (k, &v) in vertex.iter().enumerate().skip(1) {
            start[k + 1] = total;
            total = total.saturating_add(nodes[v as usize].in_degree);
        }
        let mut from = vec![NONE; total as usize];

        let mut place = |w: u32, source: u32| {
            let Some(node) = nodes.get_mut(w as usize) else { return };
            // A callback inconsistent between the passes could name a node the first pass never
            // reached, or more edges than it counted; those edges are dropped.
            if node.number == NONE || node.in_degree == 0 {
                return;
            }
            node.in_degree -= 1;
            let cursor = &mut start[node.number as usize + 1];
            if let Some(slot) = from.get_mut(*cursor as usize) {
                *slot = source;
                *cursor += 1;
            }
        };
        for &root in roots {
            place(root, 0);
        }
        let mut buffer = Vec::new();
        for (k, &v) in vertex.iter().enumerate().skip(1) {
            buffer.clear();
            successors(v, &mut buffer);
            for &w in &buffer {
                if w != v {
                    place(w, k as u32);
                }
            }
        }
        Predecessors { start, from }
    }

    fn of(&self, k: usize) -> &[u32] {
        let (Some(&begin), Some(&end)) = (self.start.get(k), self.start.get(k + 1)) else { return &[] };
        self.from.get(begin as usize..end as usize).unwrap_or(&[])
    }

    fn heap_bytes(&self) -> u64 {
        vec_bytes(&self.start) + vec_bytes(&self.from)
    }
}

/// One vertex of the link-eval forest. Its fields sit together because path compression reads
/// and writes all of them for the same vertex, at random places in a graph of millions: one cache
/// line per step rather than four.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// Forest parent: the DFS parent once linked, then shortcut by path compression.
    ancestor: u32,
    /// The vertex of smallest semidominator on the compressed path below `ancestor`...
    label: u32,
    /// ...and its semidominator, copied here to save a random read of it.
    label_semi: u32,
    /// This vertex's semidominator (its own number until computed).
    semi: u32,
}

/// Immediate dominators by DFS number (entry 0, the super-root, is 0).
///
/// Lengauer-Tarjan, simple version. The link-eval forest needs no explicit link step: vertices
/// are processed in decreasing DFS number and each is linked to its DFS parent right after, so
/// "v is linked" is "v >= threshold" and `ancestor` can start out as the DFS parent.
/// `held(bytes)` is told what its own arrays hold at their largest.
fn lengauer_tarjan(parent: Vec<u32>, predecessors: &Predecessors, held: &mut dyn FnMut(u64)) -> Vec<u32> {
    let count = parent.len();
    let mut forest: Vec<Link> =
        (0..count as u32).zip(&parent).map(|(k, &p)| Link { ancestor: p, label: k, label_semi: k, semi: k }).collect();
    // The forest's ancestors start as the DFS parents, and a vertex's is first changed by
    // path compression after its own step (compression only touches linked vertices): the
    // step reads its parent there, and the separate array goes, 4 bytes a node at the peak.
    drop(parent);
    // Buckets (vertices by semidominator) as linked lists through flat arrays: each vertex sits
    // in one bucket at a time. `idom` doubles as the next pointer: a vertex's idom is written
    // exactly when it leaves its bucket.
    let mut bucket_head = vec![NONE; count];
    let mut idom = vec![NONE; count];
    let mut stack = Vec::new();
    held(vec_bytes(&forest) + vec_bytes(&bucket_head) + vec_bytes(&idom));

    for w in (1..count).rev() {
        let p = forest[w].ancestor;
        // The DFS parent is always a predecessor, so starting from it loses nothing and keeps
        // semi(w) <= parent(w) even if a predecessor list came out short.
        let mut s = p;
        for &v in predecessors.of(w) {
            if (v as usize) < count {
                let (_, semi) = eval(v, w as u32 + 1, &mut forest, &mut stack);
                s = s.min(semi);
            }
        }
        forest[w].semi = s;
        forest[w].label_semi = s;
        idom[w] = bucket_head[s as usize];
        bucket_head[s as usize] = w as u32;

        // w is now linked to p: the threshold drops to w.
        let mut v = std::mem::replace(&mut bucket_head[p as usize], NONE);
        while v != NONE {
            let next = idom[v as usize];
            let (u, u_semi) = eval(v, w as u32, &mut forest, &mut stack);
            idom[v as usize] = if u_semi < forest[v as usize].semi { u } else { p };
            v = next;
        }
    }
    idom[0] = 0;
    // Deferred idoms point at a vertex with a smaller number, already final in increasing order.
    for w in 1..count {
        if idom[w] != forest[w].semi {
            idom[w] = idom.get(idom[w] as usize).copied().unwrap_or(NONE);
        }
        // A dominator is a proper DFS ancestor, so its number is smaller. Only predecessor lists
        // that disagree with the DFS (a callback answering differently the second time) can leave
        // anything else, and the super-root keeps the result a tree, in preorder, without panics.
        if idom[w] as usize >= w {
            idom[w] = 0;
        }
    }
    idom
}

/// The vertex of smallest semidominator on the forest path above `v` (root excluded), and that
/// semidominator, with path compression. Vertices numbered `linked_from` and up are in the
/// forest; the others are roots of their own trees, not yet processed, so their semidominator
/// is still their own number.
///
/// Iterative: the recursive textbook version recurses once per vertex on the path, and a linked
/// list in the heap makes that path millions long. The path is collected first, then compressed
/// top-down, which is the order the recursion's returns would take.
fn eval(v: u32, linked_from: u32, forest: &mut [Link], stack: &mut Vec<u32>) -> (u32, u32) {
    if v < linked_from {
        return (v, v);
    }
    let mut u = v;
    while forest[u as usize].ancestor >= linked_from {
        stack.push(u);
        u = forest[u as usize].ancestor;
    }
    while let Some(x) = stack.pop() {
        let above = forest[forest[x as usize].ancestor as usize];
        let link = &mut forest[x as usize];
        if above.label_semi < link.label_semi {
            link.label = above.label;
            link.label_semi = above.label_semi;
        }
        link.ancestor = above.ancestor;
    }
    let link = forest[v as usize];
    (link.label, link.label_semi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Adjacency lists from an edge list; targets out of range are kept, to check they are ignored.
    fn adjacency(n: usize, edges: &[(u32, u32)]) -> Vec<Vec<u32>> {
        let mut adj = vec![Vec::new(); n];
        for &(a, b) in edges {
            adj[a as usize].push(b);
        }
        adj
    }

    fn tree_of(adj: &[Vec<u32>], roots: &[u32]) -> DominatorTree {
        let tree = dominator_tree(adj.len(), roots, |v, out| out.extend_from_slice(&adj[v as usize]));
        check_order(&tree);
        tree
    }

    /// `order` holds every reachable node once, each after its immediate dominator.
    fn check_order(tree: &DominatorTree) {
        let mut position = vec![usize::MAX; tree.idom.len()];
        for (i, &v) in tree.order.iter().enumerate() {
            assert_eq!(position[v as usize], usize::MAX, "{v} twice in order");
            position[v as usize] = i;
        }
        for (v, &d) in tree.idom.iter().enumerate() {
            match d {
                UNREACHABLE => assert_eq!(position[v], usize::MAX, "unreachable {v} in order"),
                SUPER_ROOT => assert_ne!(position[v], usize::MAX, "root {v} missing from order"),
                d => {
                    assert_ne!(position[v], usize::MAX, "{v} missing from order");
                    assert!(position[d as usize] < position[v], "{v} before its idom {d}");
                }
            }
        }
    }

    const R: u32 = SUPER_ROOT;
    const X: u32 = UNREACHABLE;

    #[test]
    fn diamond() {
        let adj = adjacency(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]);
        assert_eq!(tree_of(&adj, &[0]).idom, [R, 0, 0, 0]);
    }

    #[test]
    fn loop_inside_a_chain() {
        // 0 -> 1 -> 2 -> 1, 2 -> 3: the back edge does not let anything bypass 1 or 2.
        let adj = adjacency(4, &[(0, 1), (1, 2), (2, 1), (2, 3)]);
        assert_eq!(tree_of(&adj, &[0]).idom, [R, 0, 1, 2]);
        // Entering the loop at either node leaves neither dominating the other.
        let adj = adjacency(4, &[(0, 1), (0, 2), (1, 2), (2, 1), (1, 3)]);
        assert_eq!(tree_of(&adj, &[0]).idom, [R, 0, 0, 1]);
    }

    #[test]
    fn two_roots_sharing_a_child() {
        let adj = adjacency(3, &[(0, 2), (1, 2)]);
        assert_eq!(tree_of(&adj, &[0, 1]).idom, [R, R, R]);
        // A root that another root also reaches is still only dominated by the super-root.
        let adj = adjacency(3, &[(0, 1), (1, 2)]);
        assert_eq!(tree_of(&adj, &[0, 1]).idom, [R, R, 1]);
        assert_eq!(tree_of(&adj, &[1, 0, 1, 1]).idom, [R, R, 1]);
    }

    #[test]
    fn unreachable_nodes_are_marked_and_have_no_say() {
        // 3 points into the graph and 4 into 3, but no root reaches them: 2 is still dominated by 1.
        let adj = adjacency(5, &[(0, 1), (1, 2), (3, 2), (4, 3)]);
        let tree = tree_of(&adj, &[0]);
        assert_eq!(tree.idom, [R, 0, 1, X, X]);
        assert_eq!(tree.order, [0, 1, 2]);
        assert_eq!(tree_of(&adj, &[]).idom, [X; 5]);
        assert!(tree_of(&[], &[0, 3]).idom.is_empty());
    }

    #[test]
    fn self_loops_duplicates_and_bad_ids() {
        let adj = adjacency(4, &[(0, 0), (0, 1), (0, 1), (1, 1), (1, 2), (1, 2), (2, 9), (2, X), (2, R), (2, 3)]);
        assert_eq!(tree_of(&adj, &[0, 0, 7, X, R]).idom, [R, 0, 1, 2]);
    }

    #[test]
    fn lengauer_tarjan_paper_example() {
        // The flow graph of the 1979 paper: R A B C D E F G H I J K L.
        let [r, a, b, c, d, e, f, g, h, i, j, k, l] = [0u32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let edges = [
            (r, a),
            (r, b),
            (r, c),
            (a, d),
            (b, a),
            (b, d),
            (b, e),
            (c, f),
            (c, g),
            (d, l),
            (e, h),
            (f, i),
            (g, i),
            (g, j),
            (h, e),
            (h, k),
            (i, k),
            (j, i),
            (k, i),
            (k, r),
            (l, h),
        ];
        let tree = tree_of(&adjacency(13, &edges), &[r]);
        assert_eq!(tree.idom, [R, r, r, r, r, r, c, c, r, r, g, r, d]);
    }

    #[test]
    fn callback_is_called_once_for_the_walk_and_once_a_pass() {
        let adj = adjacency(5, &[(0, 1), (1, 2), (2, 0), (3, 4)]);
        let mut calls = [0; 5];
        dominator_tree(5, &[0], |v, out| {
            calls[v as usize] += 1;
            out.extend_from_slice(&adj[v as usize]);
        });
        assert_eq!(calls, [2, 2, 2, 0, 0]);
    }

    #[test]
    fn inconsistent_callback_does_not_panic() {
        // A callback that answers differently every time, with ids in and out of range.
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for _ in 0..2000 {
            let n = 1 + rng.below(40) as usize;
            let roots: Vec<u32> = (0..1 + rng.below(3)).map(|_| rng.below(n + 2)).collect();
            let tree = dominator_tree(n, &roots, |_, out| {
                for _ in 0..rng.below(6) {
                    let w = match rng.below(20) {
                        0 => UNREACHABLE,
                        1 => SUPER_ROOT,
                        _ => rng.below(n + 2),
                    };
                    out.push(w);
                }
            });
            assert_eq!(tree.idom.len(), n);
            check_order(&tree);
            retained_sizes(&tree, &vec![1; n]);
        }
    }

    #[test]
    fn retained_sizes_of_a_known_tree() {
        // 0 -> {1, 2}, 1 -> 3, 2 -> 3 (so 0 dominates 3), 3 -> 4, 5 unreachable, 6 a second root.
        let adj = adjacency(7, &[(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (5, 0), (6, 4)]);
        let tree = tree_of(&adj, &[0, 6]);
        assert_eq!(tree.idom, [R, 0, 0, 0, R, X, R]);
        let shallow = [1, 10, 100, 1000, 10_000, 100_000, 1_000_000];
        assert_eq!(retained_sizes(&tree, &shallow), [1111, 10, 100, 1000, 10_000, 0, 1_000_000]);
        // A short size table counts the missing nodes as 0.
        assert_eq!(retained_sizes(&tree, &[1, 2]), [3, 2, 0, 0, 0, 0, 0]);
        // Sums saturate.
        assert_eq!(retained_sizes(&tree, &[u64::MAX, 1])[0], u64::MAX);
    }

    #[test]
    fn retained_sizes_survive_a_made_up_tree() {
        let tree = DominatorTree { idom: vec![5, R, X, 0], order: vec![0, 9, 3, 1, 3], peak_bytes: 0 };
        assert_eq!(retained_sizes(&tree, &[1, 2, 3, 4]).len(), 4);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> u32 {
            (self.next() % n as u64) as u32
        }
    }

    /// Nodes reachable from `roots` when `removed` is taken out of the graph.
    fn reachable_without(adj: &[Vec<u32>], roots: &[u32], removed: Option<u32>) -> Vec<bool> {
        let n = adj.len();
        let mut seen = vec![false; n];
        let mut stack: Vec<u32> = roots.iter().copied().filter(|&r| (r as usize) < n && Some(r) != removed).collect();
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v as usize], true) {
                continue;
            }
            stack.extend(adj[v as usize].iter().copied().filter(|&w| (w as usize) < n && Some(w) != removed));
        }
        seen
    }

    /// Dominators by definition: d dominates v iff removing d cuts v off from the roots.
    /// Returns (idom, retained) for shallow size 1 + v.
    fn brute_force(adj: &[Vec<u32>], roots: &[u32]) -> (Vec<u32>, Vec<u64>) {
        let n = adj.len();
        let reachable = reachable_without(adj, roots, None);
        let mut strict_dominators = vec![Vec::new(); n];
        for d in 0..n as u32 {
            if !reachable[d as usize] {
                continue;
            }
            let without = reachable_without(adj, roots, Some(d));
            for v in 0..n {
                if v != d as usize && reachable[v] && !without[v] {
                    strict_dominators[v].push(d);
                }
            }
        }
        let mut idom = vec![UNREACHABLE; n];
        let mut retained = vec![0u64; n];
        for v in 0..n {
            if !reachable[v] {
                continue;
            }
            // Dominators form a chain; the immediate one has all the others above it.
            idom[v] = strict_dominators[v]
                .iter()
                .copied()
                .max_by_key(|&d| strict_dominators[d as usize].len())
                .unwrap_or(SUPER_ROOT);
            retained[v] += 1 + v as u64;
            for &d in &strict_dominators[v] {
                retained[d as usize] += 1 + v as u64;
            }
        }
        (idom, retained)
    }

    #[test]
    fn matches_brute_force_on_random_graphs() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for case in 0..600 {
            let n = 1 + rng.below(60) as usize;
            let density = 1 + rng.below(4) as usize;
            let edge_count = rng.below(n * density + 1) as usize;
            let mut edges = Vec::with_capacity(edge_count);
            for _ in 0..edge_count {
                let from = rng.below(n);
                // Many edges go a short way forward so that chains, and real dominators, form.
                let to = match rng.below(10) {
                    0..=4 => (from + 1 + rng.below(3)).min(n as u32 - 1),
                    5 => n as u32 + rng.below(3),
                    _ => rng.below(n),
                };
                edges.push((from, to));
            }
            let roots: Vec<u32> = (0..1 + rng.below(3)).map(|_| rng.below(n)).collect();
            let adj = adjacency(n, &edges);
            let (idom, retained) = brute_force(&adj, &roots);
            // The iterative algorithm, and Lengauer-Tarjan (what it falls back to).
            for passes in [MAX_PASSES, 0] {
                let tree = dominator_tree_within(n, &roots, |v, out| out.extend_from_slice(&adj[v as usize]), passes);
                check_order(&tree);
                assert_eq!(tree.idom, idom, "case {case} ({passes} passes): n={n} roots={roots:?} edges={edges:?}");
                let shallow: Vec<u64> = (1..=n as u64).collect();
                assert_eq!(retained_sizes(&tree, &shallow), retained, "case {case}");
            }
        }
    }

    #[test]
    fn deep_chain_sharing_one_object_stays_linear() {
        // A linked list whose every node also refers to one object its head reaches first:
        // every edge to it is a walk up the whole list, unless the step budget stops it.
        const N: u32 = 300_000;
        let shared = N;
        let successors = |v: u32, out: &mut Vec<u32>| {
            if v + 1 < N {
                out.push(v + 1);
            }
            if v < N {
                out.push(shared);
            }
        };
        let started = Instant::now();
        let tree = dominator_tree(N as usize + 1, &[0], successors);
        let elapsed = started.elapsed();
        eprintln!("dominators of a {N}-node chain sharing one object: {elapsed:?}");
        assert!(elapsed.as_secs() < 20, "{elapsed:?}");
        assert_eq!(tree.idom[shared as usize], 0);
        assert!(tree.idom.iter().enumerate().skip(1).take(N as usize - 1).all(|(v, &d)| d as usize == v - 1));
        let lengauer_tarjan = dominator_tree_within(N as usize + 1, &[0], successors, 0);
        assert_eq!((tree.idom, tree.order), (lengauer_tarjan.idom, lengauer_tarjan.order));
    }

    #[test]
    fn deep_chain_does_not_overflow_the_stack() {
        const N: u32 = 2_000_000;
        // A linked list, plus an edge from its tail back to node 1: processing node 1 then
        // evaluates the tail, whose forest path runs through the whole list.
        let started = Instant::now();
        let tree = dominator_tree(N as usize, &[0], |v, out| {
            if v + 1 < N {
                out.push(v + 1);
            } else {
                out.push(1);
            }
        });
        eprintln!("dominators of a {N}-node chain: {:?}", started.elapsed());
        assert_eq!(tree.idom[0], SUPER_ROOT);
        assert!(tree.idom.iter().enumerate().skip(1).all(|(v, &d)| d as usize == v - 1));
        assert!(tree.order.iter().enumerate().all(|(i, &v)| v as usize == i));
        let retained = retained_sizes(&tree, &vec![1; N as usize]);
        assert!(retained.iter().enumerate().all(|(v, &r)| r == u64::from(N) - v as u64));
    }

    /// Every edge u -> v from a reachable u must pass the test a dominator tree passes:
    /// idom(v) is u or one of u's dominators (any path to u, then u -> v, is a path to v).
    fn check_edges(tree: &DominatorTree, adj_start: &[usize], adj: &[u32]) {
        let n = tree.idom.len();
        // Interval of each node in a preorder of the dominator tree, for ancestor checks.
        let mut first_child = vec![NONE; n];
        let mut next_sibling = vec![NONE; n];
        let mut tops = Vec::new();
        for &v in tree.order.iter().rev() {
            match tree.idom[v as usize] {
                SUPER_ROOT => tops.push(v),
                d => {
                    next_sibling[v as usize] = first_child[d as usize];
                    first_child[d as usize] = v;
                }
            }
        }
        let (mut enter, mut leave) = (vec![0usize; n], vec![0usize; n]);
        let mut clock = 0;
        let mut stack: Vec<(u32, bool)> = tops.into_iter().map(|v| (v, false)).collect();
        while let Some((v, done)) = stack.pop() {
            if done {
                leave[v as usize] = clock;
                continue;
            }
            enter[v as usize] = clock;
            clock += 1;
            stack.push((v, true));
            let mut c = first_child[v as usize];
            while c != NONE {
                stack.push((c, false));
                c = next_sibling[c as usize];
            }
        }
        let is_ancestor_or_self = |a: usize, b: usize| enter[a] <= enter[b] && enter[b] < leave[a];
        for &u in &tree.order {
            for &v in &adj[adj_start[u as usize]..adj_start[u as usize + 1]] {
                let d = tree.idom[v as usize];
                assert_ne!(d, UNREACHABLE);
                if d != SUPER_ROOT && v != u {
                    assert!(is_ancestor_or_self(d as usize, u as usize), "edge {u} -> {v}, idom {d}");
                }
            }
        }
    }

    #[test]
    fn large_random_graph() {
        const N: usize = 1_000_000;
        const DEGREE: usize = 4;
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let adj: Vec<u32> = (0..N * DEGREE).map(|_| rng.below(N)).collect();
        let adj_start: Vec<usize> = (0..=N).map(|v| v * DEGREE).collect();
        let roots = [0, 1, 2, 3, 4, 5, 6, 7];
        let started = Instant::now();
        let tree = dominator_tree(N, &roots, |v, out| {
            out.extend_from_slice(&adj[v as usize * DEGREE..(v as usize + 1) * DEGREE]);
        });
        let elapsed = started.elapsed();
        eprintln!("dominators of {N} nodes x {DEGREE} random edges: {elapsed:?} ({} reachable)", tree.order.len());
        check_order(&tree);
        check_edges(&tree, &adj_start, &adj);
        let retained = retained_sizes(&tree, &vec![1; N]);
        let top: u64 =
            tree.order.iter().filter(|&&v| tree.idom[v as usize] == SUPER_ROOT).map(|&v| retained[v as usize]).sum();
        assert_eq!(top, tree.order.len() as u64);
    }
}
