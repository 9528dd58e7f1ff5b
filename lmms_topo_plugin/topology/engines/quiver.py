"""The zigzag barcode (H0, H1) without dionysus: homology of every complex, then the quiver's decomposition.

Why these are dionysus' bars. dionysus runs a simplex-wise refinement of ``X_0 = K_0 ⊇ X_1 = K_0∩K_1 ⊆ X_2 = K_1
⊇ …``. All simplices of one batch share its time, so a bar born and killed inside a batch has ``birth ==
death`` and is not reported, and every other bar covers positions ``p..q`` and is reported as ``(p - 0.5,
q + 0.5)`` (``inf`` if ``q`` is the last position). Those are the intervals of the module ``H(X_0) ← H(X_1) →
H(X_2) ← …``, and interval decompositions are unique. So decomposing this module with any correct method gives
dionysus' multisets of bars exactly. Three steps do it here:

* **Homology of one complex** (:class:`_Homology`). ``H0`` has the components as basis. For ``H1`` take a
  spanning forest ``T``: ``C1 = Z1 ⊕ span(T)`` and ``B1 ⊆ Z1``, so ``H1 = Z1/B1 ≅ C1/(B1 + span(T))``. That is
  the edge space modulo "forest edge = 0" and "the three edges of a triangle sum to 0". A relation with at most
  two classes left is a union-find union (merging into class 0 kills a class). These unions run in vectorised
  rounds until every triangle left has three distinct live classes. Those few relations go into echelon form
  (Python ints as GF(2) rows), and the live classes that lead no relation are a basis of ``H1``.
* **Maps** ``H(X_{2l±1}) → H(X_{2l})``. A component goes to the component holding its vertices. A basis class
  of the source is the fundamental cycle ``e + path_T(u, v)`` of its edge ``e = uv``, so its image is ``[e] +
  P(u) + P(v)``. Here ``P(x)`` adds up the sink's classes of the forest edges on the path from ``x``'s root;
  the shared part of the two paths cancels.
* **Decomposition** (:func:`_decompose`), left to right. It keeps a basis of the current space made of the
  generators of the intervals alive there. Generator ``x_i`` may become ``x_i + x_j`` (an automorphism of the
  module) when interval ``i`` maps nonzero to interval ``j``. For two intervals ending at the same position
  that holds when they are born together, or ``j`` was born later by a removal, or ``i`` was born later by an
  addition. This is the total order of :func:`_key`: removal-born classes first, latest first, then
  addition-born ones (position 0 counts as an addition), earliest first. ``i`` may absorb every class below
  it. Into a bigger complex, a generator whose image depends on those of lower ones can be made to map to 0,
  so its interval ends (elder rule), and a complement of the image is born on top. Into a smaller complex
  ``g: X_{2l+1} → X_{2l}``, a generator stays exactly when it is the top element of some vector of ``im g``.
  The image's echelon form in key order names those generators and gives their preimages, the others end, and
  ``ker g`` is born at the bottom.

None of this needs dionysus or any compiled code beyond numpy.
"""

from __future__ import annotations

import numpy as np


def _key(position: int) -> int:
    """Rank of a class born at ``position``: odd (by a removal) ``-position`` < even (by an addition) ``position + 1``."""
    return -position if position % 2 else position + 1


def _birth(key: int) -> int:
    return -key if key < 0 else key - 1


def _roots(parent: np.ndarray) -> np.ndarray:
    """Every node's root in a union-find forest whose nodes point to smaller ones (pointer jumping)."""
    while True:
        jumped = parent[parent]
        if np.array_equal(jumped, parent):
            return parent
        parent = jumped


def _forest(num_vertices: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A spanning forest of the edges ``u-v`` (Borůvka, edge index as weight) and each vertex's component label
    (a vertex of that component)."""
    comp = np.arange(num_vertices)
    in_forest = np.zeros(len(u), dtype=bool)
    index = np.arange(len(u))
    while True:
        cu, cv = comp[u], comp[v]
        cross = cu != cv
        if not cross.any():
            return in_forest, comp
        lightest = np.full(num_vertices, len(u))
        np.minimum.at(lightest, cu[cross], index[cross])
        np.minimum.at(lightest, cv[cross], index[cross])
        chosen = np.unique(lightest[lightest < len(u)])  # with distinct weights these form a forest
        in_forest[chosen] = True
        a, b = comp[u[chosen]], comp[v[chosen]]
        label = np.arange(num_vertices)
        while True:  # components of the chosen edges over the current components: min-label propagation
            low = np.minimum(label[a], label[b])
            merged = label.copy()
            np.minimum.at(merged, a, low)
            np.minimum.at(merged, b, low)
            merged = _roots(merged)
            if np.array_equal(merged, label):
                break
            label = merged
        comp = label[comp]


class _Homology:
    """H0 and H1 of one complex (edges ``u-v`` on vertices ``0..n-1``, triangles as triples of edge indices).

    ``components``: component label of every vertex. ``edge_class``: the H1 class of every edge as a bit index,
    ``-1`` for class 0, in the space of live classes modulo ``relations`` (echelon rows, leading bit → row), whose
    dimension is ``rank`` = β1.
    """

    def __init__(self, num_vertices: int, u: np.ndarray, v: np.ndarray, tri_edges: np.ndarray):
        self.in_forest, self.components = _forest(num_vertices, u, v)
        parent = np.arange(len(u) + 1)  # node e + 1 is edge e, node 0 is the zero class
        parent[np.flatnonzero(self.in_forest) + 1] = 0
        active = tri_edges + 1
        while len(active):
            parent = _roots(parent)
            s0, s1, s2 = np.sort(parent[active], axis=1).T
            # the classes left once zeros are dropped and equal classes cancel in pairs (equal ones are adjacent)
            k0 = (s0 > 0) & ((s0 != s1) | (s1 == s2))
            k1 = (s1 > 0) & (s1 != s0) & (s1 != s2)
            k2 = (s2 > 0) & (s2 != s1)
            terms = k0.astype(np.int64) + k1 + k2
            hook = (terms == 1) | (terms == 2)
            if not hook.any():
                active = active[terms == 3]
                break
            top = np.where(k2, s2, np.where(k1, s1, s0))
            low = np.where(terms == 2, np.where(k0, s0, s1), 0)
            # a root hooks under a smaller one (0 = killed); when writes collide, the losers retry next round
            parent[top[hook]] = low[hook]
            active = active[terms > 0]
        parent = _roots(parent)
        self.live = np.unique(parent[parent > 0])  # root nodes of the live classes
        bit = np.full(len(u) + 1, -1)
        bit[self.live] = np.arange(len(self.live))
        self.edge_class = bit[parent[1:]]
        self.relations: dict[int, int] = {}
        for a, b, c in bit[parent[active]].tolist():
            row = (1 << a) | (1 << b) | (1 << c)
            while row:
                lead = row.bit_length() - 1
                if lead not in self.relations:
                    self.relations[lead] = row
                    break
                row ^= self.relations[lead]
        self.rank = len(self.live) - len(self.relations)

    def h1_basis_edges(self) -> np.ndarray:
        """Edges whose fundamental cycles are a basis of H1: the live classes that lead no relation."""
        free = np.ones(len(self.live), dtype=bool)
        free[list(self.relations)] = False
        return self.live[free] - 1


def _forest_order(num_vertices: int, u: np.ndarray, v: np.ndarray, in_forest: np.ndarray) -> list[tuple[int, int, int]]:
    """``(child, parent, edge)`` for every forest edge, parents before children (BFS of every tree)."""
    edges = np.flatnonzero(in_forest)
    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(num_vertices)]
    for e, a, b in zip(edges.tolist(), u[edges].tolist(), v[edges].tolist()):
        adjacency[a].append((b, e))
        adjacency[b].append((a, e))
    seen = [False] * num_vertices
    order = []
    for start in range(num_vertices):
        if seen[start] or not adjacency[start]:
            continue
        seen[start] = True
        queue = [start]
        for x in queue:
            for y, e in adjacency[x]:
                if not seen[y]:
                    seen[y] = True
                    order.append((y, x, e))
                    queue.append(y)
    return order


def _combine(vectors: list[int], combination: int) -> int:
    """XOR of ``vectors[k]`` over the set bits ``k`` of ``combination``."""
    total = 0
    while combination:
        low = combination & -combination
        total ^= vectors[low.bit_length() - 1]
        combination ^= low
    return total


def _decompose(sinks: list[tuple[int, dict[int, int]]], maps: list[tuple[list[int], list[int]]]) -> list[tuple[int, int]]:
    """Bars ``(first, last position)`` of ``H(S_0) ← H(M_0) → H(S_1) ← H(M_1) → … H(S_L)``.

    ``sinks[l] = (dim, relations)``: ``H(S_l)`` is the space of bit rows modulo the echelon ``relations`` and has
    dimension ``dim``. ``maps[l] = (left, right)``: the images in ``S_l`` and ``S_{l+1}`` of the basis of
    ``H(M_l)``. In a sink the alive generators are ``y_i``, in key order, kept as echelon rows next to the
    relations, plus ``fresh`` ones born there (a complement, above every ``y_i``). A table entry ``(row, s, c)``
    means ``row = g(c) + Σ_{i ∈ s} y_i`` modulo the relations, ``c`` a combination of the source's basis.
    """
    bars: list[tuple[int, int]] = []
    fresh, relations = sinks[0]
    table = {lead: (row, 0, 0) for lead, row in relations.items()}
    alive: list[int] = []  # keys of the y_i
    for l, (left, right) in enumerate(maps):
        p = 2 * l
        # S_l ← M_l: reduce the images; a remainder off the span of the y_i is a fresh generator kept
        work = dict(table)
        in_span: list[tuple[int, int]] = []
        fresh_kept: list[int] = []
        for k, row in enumerate(left):
            s, c = 0, 1 << k
            while row:
                lead = row.bit_length() - 1
                entry = work.get(lead)
                if entry is None:
                    work[lead] = (row, s, c)
                    fresh_kept.append(c)
                    break
                row ^= entry[0]
                s ^= entry[1]
                c ^= entry[2]
            else:
                in_span.append((s, c))
        # image vectors inside span(y): echelon by their top y_i, which stays; what reduces to nothing is the kernel
        tops: dict[int, tuple[int, int]] = {}
        kernel: list[int] = []
        for s, c in in_span:
            while s:
                lead = s.bit_length() - 1
                if lead not in tops:
                    tops[lead] = (s, c)
                    break
                s ^= tops[lead][0]
                c ^= tops[lead][1]
            else:
                kernel.append(c)
        bars.extend((_birth(key), p) for i, key in enumerate(alive) if i not in tops)
        bars.extend([(p, p)] * (fresh - len(fresh_kept)))
        basis = [(alive[i], c) for i, (_, c) in tops.items()]
        basis += [(_key(p), c) for c in fresh_kept] + [(_key(p + 1), c) for c in kernel]
        # M_l → S_{l+1}: images in key order; one in the span of the lower ones dies (elder rule)
        dim, relations = sinks[l + 1]
        table = {lead: (row, 0, 0) for lead, row in relations.items()}
        alive = []
        for key, c in sorted(basis, key=lambda item: item[0]):
            row = _combine(right, c)
            while row:
                lead = row.bit_length() - 1
                if lead not in table:
                    table[lead] = (row, 1 << len(alive), 0)
                    alive.append(key)
                    break
                row ^= table[lead][0]
            else:
                bars.append((_birth(key), p + 1))
        fresh = dim - len(alive)
    last = 2 * (len(sinks) - 1)
    bars.extend((_birth(key), last) for key in alive)
    bars.extend([(last, last)] * fresh)
    return bars


def _complexes(num_depths: int, simplices: np.ndarray, times: np.ndarray, offsets: np.ndarray):
    """Vertex count, edge ends, triangle → edges, and per position the present vertices (mask), edges, triangles.

    Checks build_zigzag's layout: additions at ``2l - 0.5`` (present from position ``2l``), removals at
    ``2l + 0.5`` (absent from ``2l + 1``).
    """
    counts = np.diff(offsets)
    positions = 2 * num_depths - 1
    effect = np.ceil(times).astype(np.int64)  # first position after the event
    removal = (np.arange(len(times)) - np.repeat(offsets[:-1], counts)) % 2 == 1
    if (np.any(times != effect - 0.5) or np.any(effect % 2 != removal) or np.any(effect < 0)
            or np.any(effect > positions - 1 + removal)):
        raise ValueError("the quiver engine needs build_zigzag's layout: additions at 2l - 0.5, removals at 2l + 0.5")
    owner = np.repeat(np.arange(len(simplices)), counts)
    adds = np.flatnonzero(~removal)
    closed = np.append(removal[1:], False)[adds]  # the next event (same simplex) removes it
    ends = np.where(closed, effect[np.minimum(adds + 1, len(times) - 1)] - 1, positions - 1)
    lengths = ends - effect[adds] + 1
    member = np.repeat(owner[adds], lengths)
    at = np.repeat(effect[adds] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    order = np.argsort(at, kind="stable")
    member, bounds = member[order], np.searchsorted(at[order], np.arange(positions + 1))

    size = (simplices >= 0).sum(axis=1)
    n = int(simplices[:, 0].max()) + 1 if len(simplices) else 0
    edge_rows, tri_rows = np.flatnonzero(size == 2), np.flatnonzero(size == 3)
    local = np.full(len(simplices), -1)  # vertex id, edge index or triangle index of every simplex row
    local[size == 1] = simplices[size == 1, 0]
    local[edge_rows] = np.arange(len(edge_rows))
    local[tri_rows] = np.arange(len(tri_rows))
    eu, ev = simplices[edge_rows, 0], simplices[edge_rows, 1]
    codes = eu * max(n, 1) + ev
    sort = np.argsort(codes)
    tri = simplices[tri_rows]
    tri_edges = np.stack([sort[np.searchsorted(codes[sort], tri[:, i] * max(n, 1) + tri[:, j])]
                          for i, j in ((0, 1), (0, 2), (1, 2))], axis=1).reshape(-1, 3)
    per_position = []
    for p in range(positions):
        present = member[bounds[p]:bounds[p + 1]]
        kind = size[present]
        vertices = np.zeros(n, dtype=bool)
        vertices[local[present[kind == 1]]] = True
        per_position.append((vertices, local[present[kind == 2]], local[present[kind == 3]]))
    return n, eu, ev, tri_edges, per_position


def quiver_barcode(num_depths: int, simplices: np.ndarray, times: np.ndarray,
                   offsets: np.ndarray) -> dict[int, np.ndarray]:
    """Bars ``[B, 2]`` (birth time, death time; ``inf`` = never dies) of H0 and H1, sorted: dionysus' bars.

    The zigzag comes as the arrays of a :class:`~lmms_topo_plugin.topology.zigzag.ZigzagInput` (its depth count,
    simplex rows, add/remove times and their offsets), as dionysus takes them as lists: an engine needs numpy only.
    """
    n, eu, ev, tri_edges, per_position = _complexes(num_depths, simplices, times, offsets)
    local = np.full(len(eu), -1)  # global edge → index in the complex at hand

    def homology(edges, triangles):
        local[edges] = np.arange(len(edges))
        result = _Homology(n, eu[edges], ev[edges], local[tri_edges[triangles]])
        local[edges] = -1
        return result

    complexes = [(vertices, edges, homology(edges, triangles)) for vertices, edges, triangles in per_position]
    sinks = {0: [], 1: []}
    labels = []
    for vertices, _, h in complexes[::2]:
        labels.append(np.unique(h.components[vertices]))
        sinks[0].append((len(labels[-1]), {}))
        sinks[1].append((h.rank, h.relations))
    maps = {0: [], 1: []}
    for l in range(len(complexes) // 2):
        vertices, edges, h = complexes[2 * l + 1]
        reps = np.unique(h.components[vertices])  # one vertex per component
        basis = h.h1_basis_edges()
        forest = _forest_order(n, eu[edges], ev[edges], h.in_forest)
        images0, images1 = [], []
        for side in (l, l + 1):
            _, sink_edges, sink = complexes[2 * side]
            images0.append([1 << b for b in np.searchsorted(labels[side], sink.components[reps]).tolist()])
            local[sink_edges] = np.arange(len(sink_edges))
            classes = [1 << b if b >= 0 else 0 for b in sink.edge_class[local[edges]].tolist()]
            local[sink_edges] = -1
            potential = [0] * n
            for child, parent, e in forest:
                potential[child] = potential[parent] ^ classes[e]
            images1.append([classes[e] ^ potential[a] ^ potential[b]
                            for e, a, b in zip(basis.tolist(), eu[edges[basis]].tolist(), ev[edges[basis]].tolist())])
        maps[0].append(tuple(images0))
        maps[1].append(tuple(images1))
    last = len(complexes) - 1
    result = {}
    for dim in (0, 1):
        raw = np.array([(first - 0.5, np.inf if final == last else final + 0.5)
                        for first, final in _decompose(sinks[dim], maps[dim])], dtype=np.float64).reshape(-1, 2)
        result[dim] = raw[np.lexsort(raw.T[::-1])]
    return result
