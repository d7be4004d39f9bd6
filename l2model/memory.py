# About 500 lines on purpose: the memory, its graph and the choice of its kernels are one design.
"""A memory of confirmed examples: how a few reports change the model near them and nowhere
else (docs/decisions/0019-memory-of-confirmed-examples.md).

The incumbent's graph stays as it is. Each confirmed example (a curated FP or miss) becomes a
prototype: its TF-IDF vector, cut to its ``features_per_example`` heaviest features and
normalised. A text's binary margin is then moved by the nearest prototypes of each label::

    margin' = margin + max_j up_j * k_up(sim_j) - max_j down_j * k_down(sim_j)
    k(s)    = clip((s - low) / (high - low), 0, 1)

where ``sim_j`` is the cosine of the text and prototype ``j``, ``up_j`` (a miss) or
``down_j`` (a false positive) is what moves the example itself past the threshold by
``margin`` logits, and ``low``/``high`` are a kernel: below ``low`` similar, nothing moves.
Traffic unlike every report keeps its score to the bit, which is what protects tenants who
reported nothing; a linear refit moves every score that shares a feature with a report.

Each direction's kernel is chosen, not set: each candidate kernel is judged by leave-one-out
on that direction's examples (would the other reports have fixed this one?) under that
direction's constraint on prompts whose labels are known: un-flagging (false positives) may
cost at most ``recall_tolerance`` of recall on known attacks; flagging (misses) may flag no
known-benign prompt the incumbent let through.

In a graph that reads dense feature rows (lite), the memory is a Gather of each prototype's
features, a product with its values summed per prototype, and a few element-wise nodes on
``binary_margin``: the other heads are the incumbent's. A graph that reads a prompt's columns
(fast) is fed the dot products instead (``memory_dots``), found beside its n-grams from the
``prototypes.npz`` written with it: inside onnxruntime the per-element Gathers and scatters
cost as much as the rest of that model. Either way its size is linear in the examples (12
bytes per kept feature).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import orjson
import scipy.sparse as sp
from onnx import helper, numpy_helper
from pydantic import BaseModel, ConfigDict

from l2model.contract import MEMORY_DOTS, NGRAM_IDS, OUTPUT_BINARY, PROTOTYPES_FILE
from l2model.private import write_private
from l2model.record import TrainingRecord
from l2model.runtime import Feed, NgramFeed, session_for

MEMORY_FILE = "memory.jsonl"
FEATURES = "features"
MARGIN = "binary_margin"
BASE_MARGIN = "binary_margin_base"
PREFIX = "memory_"
BATCH = 256
# Two copies of one report (the same text reported twice, an edited copy) are one example
# to leave-one-out: a prototype matched this well, relative to how well its own text
# matches it, is left out with the example.
SAME_EXAMPLE = 0.9
# The kernels tried, as (low, high) cosines: a ramp 0.15 wide, from broad to very local.
KERNELS = tuple((round(high - 0.15, 2), high) for high in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))


class KernelTrial(BaseModel):
    """How one kernel did in the choice for one direction: leave-one-out and constraints."""

    model_config = ConfigDict(frozen=True)

    direction: Literal["up", "down"]
    low: float
    high: float
    loo_right: int
    known_attacks_missed: int
    known_benign_flagged: int
    # Did the counterfactual replay accept this kernel's flips on recent traffic (None: no
    # traffic was given)?
    traffic_accepted: bool | None = None
    allowed: bool


class MemorySummary(BaseModel):
    """The manifest's account of the memory: what it holds and how its kernel was chosen."""

    model_config = ConfigDict(frozen=True)

    examples: int
    false_positives: int
    misses: int
    features_per_example: int
    union_features: int
    margin: float
    up: tuple[float, float]
    down: tuple[float, float]
    loo_right: int
    loo_right_before: int
    trials: list[KernelTrial]
    known_attacks: int
    known_attacks_missed_before: int
    known_benign: int
    known_benign_flagged_before: int


@dataclass(frozen=True)
class Prototypes:
    """The examples' pruned, normalised vectors: row j holds prototype j's feature indices
    and values (zero-padded where a text has fewer features). Stored sparse, in the graph as
    here: a memory of m examples costs m by k indices and values, not a matrix over the
    union of their features (which grows with m too)."""

    indices: np.ndarray  # (m, k) int64 feature indices
    values: np.ndarray  # (m, k) float32, each row of unit norm
    labels: np.ndarray  # (m,) 0/1
    amounts: np.ndarray  # (m,) float32 logits

    @property
    def union(self) -> np.ndarray:
        """The features any prototype holds: the columns a text's features are read on."""
        found: np.ndarray = np.unique(self.indices[self.values > 0])
        return found

    def similarities(self, seen: Views) -> np.ndarray:
        """(N, m) cosines of texts (their features on ``union``) with every prototype, as
        the graph computes them."""
        assert seen.picked is not None
        rows, columns = np.nonzero(self.values > 0)
        weights = sp.csr_matrix(
            (
                self.values[rows, columns],
                (np.searchsorted(self.union, self.indices[rows, columns]), rows),
            ),
            shape=(seen.picked.shape[1], len(self.labels)),
        )
        sims: np.ndarray = np.asarray(weights.T @ seen.picked.T).T / seen.norms
        return sims

    def by_column(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each kept feature as (its column, its prototype's number, its value)."""
        owners, slots = np.nonzero(self.values > 0)
        return self.indices[owners, slots], owners, self.values[owners, slots]

    def pull(self, sims: np.ndarray, label: int, kernel: tuple[float, float]) -> np.ndarray:
        """(N,) the strongest pull of the prototypes of ``label`` under ``kernel``."""
        low, high = kernel
        ramp = np.clip((sims - low) / (high - low), 0.0, 1.0)
        pulls = np.where(self.labels[None, :] == label, ramp * self.amounts[None, :], 0.0)
        strongest: np.ndarray = pulls.max(axis=1, initial=0.0)
        return strongest

    def shift(
        self, sims: np.ndarray, up: tuple[float, float], down: tuple[float, float]
    ) -> np.ndarray:
        """(N,) the margin shift for texts with ``sims``."""
        result: np.ndarray = self.pull(sims, 1, up) - self.pull(sims, 0, down)
        return result


def logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def strip_memory(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph without its memory (the incumbent's own heads), a copy; unchanged copy when
    it has none."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    graph = stripped.graph
    if not any(BASE_MARGIN in node.output for node in graph.node):
        return stripped
    kept = [
        node
        for node in graph.node
        if not any(out.startswith(PREFIX) for out in node.output) and MARGIN not in node.output
    ]
    for node in kept:
        node.output[:] = [MARGIN if out == BASE_MARGIN else out for out in node.output]
    del graph.node[:]
    graph.node.extend(kept)
    inputs = [i for i in graph.input if i.name != MEMORY_DOTS]
    del graph.input[:]
    graph.input.extend(inputs)
    initializers = [i for i in graph.initializer if not i.name.startswith(PREFIX)]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return stripped


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """``model`` serialised with intermediate tensors ``names`` as extra outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    serialised: bytes = probe.SerializeToString()
    return serialised


@dataclass(frozen=True)
class Views:
    """What the memory needs of some texts' features, read batch by batch (the full TF-IDF
    rows are 64,000 floats each): margins, norms, and either each text's heaviest features
    or its features on the prototypes' union."""

    margins: np.ndarray  # (N,)
    norms: np.ndarray  # (N, 1)
    top: np.ndarray | None = None  # (N, k) feature indices, heaviest first
    top_values: np.ndarray | None = None  # (N, k)
    picked: np.ndarray | None = None  # (N, u)


def _sparse_input(model: onnx.ModelProto) -> bool:
    """Whether the graph reads a prompt's columns (``ngram_ids``, the fast model), its
    ``features`` then holding their values, rather than a dense row over every column."""
    return any(i.name == NGRAM_IDS for i in model.graph.input)


def _width(model: onnx.ModelProto) -> int:
    """How many feature columns a sparse-input graph has: its column table's rows, less the
    padding column's."""
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and NGRAM_IDS in n.input]
    tables = {i.name: i.dims[0] for i in model.graph.initializer if i.dims}
    return min(int(tables[n.input[0]]) for n in gathers if n.input[0] in tables) - 1


def _dense(found: np.ndarray, ids: np.ndarray | None, width: int) -> np.ndarray:
    """The batch's features as rows over every column (the padding column dropped)."""
    if ids is None:
        return found
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    spread = sp.csr_matrix(
        (found.reshape(-1), (rows, ids.reshape(-1))), shape=(ids.shape[0], width + 1)
    )
    return np.asarray(spread[:, :width].todense(), np.float32)


def views(
    model: onnx.ModelProto,
    feed: Feed,
    texts: Sequence[str],
    *,
    top: int | None = None,
    union: np.ndarray | None = None,
) -> Views:
    """Runs the graph (with ``features`` as an extra output) over ``texts`` in batches;
    ``feed`` makes the graph's inputs, as the scorer does."""
    session = session_for(_with_outputs(model, [FEATURES]), threads=1)
    names = {i.name for i in session.get_inputs()}
    width = _width(model) if _sparse_input(model) else 0
    margins, norms, tops, top_values, picked = [], [], [], [], []
    for start in range(0, len(texts), BATCH):
        # An incumbent's feed makes its memory's input too, which its stripped graph lacks.
        inputs = {k: v for k, v in feed(texts[start : start + BATCH]).items() if k in names}
        binary, found = session.run([OUTPUT_BINARY, FEATURES], inputs)
        feats = _dense(np.asarray(found, np.float32), inputs.get(NGRAM_IDS), width)
        margins.append(np.asarray(binary[:, 1] - binary[:, 0], np.float64))
        norms.append(np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12))
        if top is not None:
            order = np.argsort(-feats, axis=1, kind="stable")[:, :top]
            tops.append(order)
            top_values.append(np.take_along_axis(feats, order, axis=1))
        if union is not None:
            picked.append(feats[:, union])

    def stacked(parts: list[np.ndarray]) -> np.ndarray | None:
        return np.vstack(parts) if parts else None

    return Views(
        margins=np.concatenate(margins) if margins else np.zeros(0),
        norms=np.vstack(norms) if norms else np.zeros((0, 1), np.float32),
        top=stacked(tops),
        top_values=stacked(top_values),
        picked=stacked(picked),
    )


def prototypes(seen: Views, labels: np.ndarray, *, threshold: float, margin: float) -> Prototypes:
    """Each example's heaviest features (``seen.top``), normalised; its amount is what moves
    it past ``threshold`` by ``margin`` logits (at least ``margin``)."""
    assert seen.top is not None and seen.top_values is not None
    values = np.where(seen.top_values > 0, seen.top_values, 0.0)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    values = (values / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    cut = logit(threshold)
    gaps = np.where(labels == 1, cut - seen.margins, seen.margins - cut)
    amounts = (np.maximum(gaps, 0.0) + margin).astype(np.float32)
    return Prototypes(seen.top.astype(np.int64), values, labels.astype(np.int64), amounts)


def leave_one_out(protos: Prototypes, examples: Views) -> np.ndarray:
    """The examples' similarities to their own prototypes (same order), each blind to itself
    and its copies: a text matches its own cut-down prototype below 1, so a copy is one that
    matches a prototype at least ``SAME_EXAMPLE`` as well as the prototype's own text does."""
    own = protos.similarities(examples)
    itself = np.diag(own)
    copies = own >= SAME_EXAMPLE * itself[None, :]
    np.fill_diagonal(copies, True)
    blind: np.ndarray = np.where(copies, 0.0, own)
    return blind


@dataclass(frozen=True)
class TrafficGuard:
    """Recent traffic and the gate's verdict on a candidate's flips there: given the
    incumbent's and the candidate's decisions on ``texts``, would the counterfactual replay
    accept them? The memory learns only as far as the reports explain."""

    texts: Sequence[str]
    accepts: Callable[[np.ndarray, np.ndarray], bool]


@dataclass(frozen=True)
class GuardedTraffic:
    guard: TrafficGuard
    margins: np.ndarray
    sims: np.ndarray

    def accepts(self, cut: float, shift: np.ndarray) -> bool:
        before = self.margins >= cut
        return self.guard.accepts(before, self.margins + shift >= cut)


def choose_kernels(
    protos: Prototypes,
    examples: Views,
    known: Views,
    known_labels: np.ndarray,
    *,
    threshold: float,
    recall_tolerance: float,
    traffic: GuardedTraffic | None = None,
) -> tuple[tuple[float, float], tuple[float, float], list[KernelTrial]]:
    """Each direction's kernel: the most examples of that direction right by leave-one-out
    among the kernels that keep its constraints (on the known prompts, and on ``traffic``
    when given); the broadest among equals. If the two chosen together move more of the
    traffic than the gate accepts, the next pair in order of preference that it accepts.
    Returns the up and down kernels and every trial."""
    cut = logit(threshold)
    labels = protos.labels
    loo = leave_one_out(protos, examples)
    known_sims = protos.similarities(known)
    attacks, benign = known_labels == 1, known_labels == 0
    missed_before = int((known.margins[attacks] < cut).sum())
    flagged_before = int((known.margins[benign] >= cut).sum())
    allowed_missed = missed_before + math.floor(recall_tolerance * int(attacks.sum()))
    trials: list[KernelTrial] = []
    preferred: dict[int, list[tuple[float, float]]] = {}
    for label, direction in ((1, "up"), (0, "down")):
        sign = 1.0 if label == 1 else -1.0
        mine = labels == label
        tried = []
        for kernel in KERNELS:
            moved = examples.margins[mine] + sign * protos.pull(loo[mine], label, kernel)
            after = known.margins + sign * protos.pull(known_sims, label, kernel)
            missed = int((after[attacks] < cut).sum())
            flagged = int((after[benign] >= cut).sum())
            keeps = flagged <= flagged_before if label == 1 else missed <= allowed_missed
            explained = traffic is None or traffic.accepts(
                cut, sign * protos.pull(traffic.sims, label, kernel)
            )
            tried.append(
                KernelTrial(
                    direction=direction,
                    low=kernel[0],
                    high=kernel[1],
                    loo_right=int(((moved >= cut) == (label == 1)).sum()),
                    known_attacks_missed=missed,
                    known_benign_flagged=flagged,
                    traffic_accepted=None if traffic is None else explained,
                    allowed=keeps and explained,
                )
            )
        allowed = sorted((t for t in tried if t.allowed), key=lambda t: (-t.loo_right, t.high))
        # With none allowed, the most local kernel: it moves little beyond the examples.
        preferred[label] = [(t.low, t.high) for t in allowed] or [KERNELS[-1]]
        trials += tried
    pairs = sorted(
        ((up, down) for up in preferred[1] for down in preferred[0]),
        key=lambda pair: preferred[1].index(pair[0]) + preferred[0].index(pair[1]),
    )
    if traffic is not None:
        together = [
            pair
            for pair in pairs
            if traffic.accepts(cut, protos.shift(traffic.sims, pair[0], pair[1]))
        ]
        pairs = together or [(KERNELS[-1], KERNELS[-1])]
    up, down = pairs[0]
    return up, down, trials


def with_memory(
    model: onnx.ModelProto,
    protos: Prototypes,
    up: tuple[float, float],
    down: tuple[float, float],
) -> onnx.ModelProto:
    """``model`` (without memory) with the memory on its binary margin."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    for existing in graph.node:
        existing.output[:] = [BASE_MARGIN if out == MARGIN else out for out in existing.output]

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, PREFIX + name))
        return PREFIX + name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        # Named apart from the incumbent's nodes even where the output is binary_margin.
        name = output if output.startswith(PREFIX) else PREFIX + output
        graph.node.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    count, width = protos.indices.shape
    if _sparse_input(model):
        # Fed by the scorer from prototypes.npz (``memory_feed``).
        graph.input.append(
            helper.make_tensor_value_info(MEMORY_DOTS, onnx.TensorProto.FLOAT, ["N", count])
        )
        dots = MEMORY_DOTS
    else:
        # Features by row (F, N): a prototype's features are then whole rows, which Gather
        # copies as blocks; gathering columns of (N, F) one element at a time cost more than
        # the rest of the graph.
        by_feature = node("Transpose", [FEATURES], PREFIX + "by_feature", perm=[1, 0])
        flat = const("indices", protos.indices.reshape(-1))
        picked = node("Gather", [by_feature, flat], PREFIX + "picked", axis=0)
        shape = const("shape", np.array([count, width, -1], np.int64))
        grouped = node("Reshape", [picked, shape], PREFIX + "grouped")
        values = const("values", protos.values[:, :, None])
        products = node("Mul", [grouped, values], PREFIX + "products")
        middle = const("middle", np.array([1], np.int64))
        summed = node("ReduceSum", [products, middle], PREFIX + "summed", keepdims=0)
        dots = node("Transpose", [summed], PREFIX + "dots", perm=[1, 0])
    axis = const("axis", np.array([1], np.int64))
    norms = node("ReduceL2", [FEATURES, axis], PREFIX + "norms", keepdims=1)
    floor = node("Max", [norms, const("floor", np.array(1e-12, np.float32))], PREFIX + "safe")
    sims = node("Div", [dots, floor], PREFIX + "sims")
    zero, one = const("zero", np.array(0.0, np.float32)), const("one", np.array(1.0, np.float32))

    def pull(direction: str, kernel: tuple[float, float], amounts: np.ndarray) -> str:
        low, width = np.array(kernel[0], np.float32), np.array(kernel[1] - kernel[0], np.float32)
        offset = node("Sub", [sims, const(f"{direction}_low", low)], f"{PREFIX}{direction}_offset")
        ramp = node(
            "Div", [offset, const(f"{direction}_width", width)], f"{PREFIX}{direction}_ramp"
        )
        clipped = node("Clip", [ramp, zero, one], f"{PREFIX}{direction}_kernel")
        weights = const(f"{direction}_amounts", amounts)
        pulls = node("Mul", [clipped, weights], f"{PREFIX}{direction}_pulls")
        return node("ReduceMax", [pulls, axis], f"{PREFIX}{direction}", keepdims=1)

    attack = (protos.labels == 1).astype(np.float32)
    up_pull = pull("up", up, protos.amounts * attack)
    down_pull = pull("down", down, protos.amounts * (1.0 - attack))
    moved = node("Sub", [up_pull, down_pull], PREFIX + "shift")
    # Appended last but consumed earlier (binary_zeros, binary_logits): restore topological
    # order by moving the heads' consumers of the margin after it.
    node("Add", [BASE_MARGIN, moved], MARGIN)
    consumers = [n for n in graph.node if MARGIN in n.input]
    rest = [n for n in graph.node if MARGIN not in n.input]
    del graph.node[:]
    graph.node.extend([*rest, *consumers])
    onnx.checker.check_model(result)
    return result


def memory_feed(feed: Feed, protos: Prototypes) -> Feed:
    """``feed`` for a graph with a memory of ``protos``: as it is for a graph that reads dense
    rows (its memory is in the graph), else with the prototypes' dot products added."""
    if not isinstance(feed, NgramFeed):
        return feed
    from l2model.ngrams import PrototypeDots

    columns, owners, weights = protos.by_column()
    return NgramFeed(
        feed.vectorizer,
        PrototypeDots(columns, owners, weights, len(protos.labels), feed.vectorizer.columns),
    )


def write_prototypes(model_dir: Path, protos: Prototypes) -> None:
    """``prototypes.npz`` beside a graph that reads a prompt's columns, owner-only: the
    prototypes are fragments of reports' texts."""
    from l2model.ngrams import prototype_bytes

    columns, owners, weights = protos.by_column()
    write_private(
        model_dir / PROTOTYPES_FILE, prototype_bytes(columns, owners, weights, len(protos.labels))
    )


@dataclass(frozen=True)
class LearnedMemory:
    model: onnx.ModelProto
    examples: list[TrainingRecord]
    summary: MemorySummary
    prototypes: Prototypes

    def write(self, model_dir: Path) -> None:
        """The memory's files beside its graph: the examples, and for a graph that reads a
        prompt's columns the prototypes it is fed."""
        write_memory(model_dir, self.examples)
        if _sparse_input(self.model):
            write_prototypes(model_dir, self.prototypes)


def learn_memory(
    incumbent: onnx.ModelProto,
    feed: Feed,
    threshold: float,
    examples: Sequence[TrainingRecord],
    known_texts: Sequence[str],
    known_labels: Sequence[int],
    *,
    features_per_example: int,
    margin: float,
    recall_tolerance: float,
    guard: TrafficGuard | None = None,
) -> LearnedMemory:
    """The incumbent's heads with a memory of ``examples`` (which include the incumbent's own
    memory, when it has one), its kernel chosen under the constraints on the known prompts."""
    base = strip_memory(incumbent)
    texts = [e.text for e in examples]
    labels = np.array([e.label for e in examples], np.int64)
    protos = prototypes(
        views(base, feed, texts, top=features_per_example),
        labels,
        threshold=threshold,
        margin=margin,
    )
    seen = views(base, feed, texts, union=protos.union)
    known = views(base, feed, list(known_texts), union=protos.union)
    truth = np.array(known_labels, np.int64)
    traffic = None
    if guard is not None and guard.texts:
        recent = views(base, feed, list(guard.texts), union=protos.union)
        traffic = GuardedTraffic(guard, recent.margins, protos.similarities(recent))
    up, down, trials = choose_kernels(
        protos,
        seen,
        known,
        truth,
        threshold=threshold,
        recall_tolerance=recall_tolerance,
        traffic=traffic,
    )
    cut = logit(threshold)
    moved = seen.margins + protos.shift(leave_one_out(protos, seen), up, down)
    summary = MemorySummary(
        examples=len(examples),
        false_positives=int((labels == 0).sum()),
        misses=int((labels == 1).sum()),
        features_per_example=features_per_example,
        union_features=len(protos.union),
        margin=margin,
        up=up,
        down=down,
        loo_right=int(((moved >= cut) == (labels == 1)).sum()),
        loo_right_before=int(((seen.margins >= cut) == (labels == 1)).sum()),
        trials=trials,
        known_attacks=int((truth == 1).sum()),
        known_attacks_missed_before=int((known.margins[truth == 1] < cut).sum()),
        known_benign=int((truth == 0).sum()),
        known_benign_flagged_before=int((known.margins[truth == 0] >= cut).sum()),
    )
    return LearnedMemory(with_memory(base, protos, up, down), list(examples), summary, protos)


def read_memory(model_dir: Path) -> list[TrainingRecord]:
    """The examples a model directory's memory holds (none when it has no memory)."""
    path = model_dir / MEMORY_FILE
    if not path.exists():
        return []
    return [
        TrainingRecord.model_validate_json(line)
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def write_memory(model_dir: Path, examples: Sequence[TrainingRecord]) -> None:
    """Beside the graph, owner-only: the texts are reports' texts."""
    write_private(
        model_dir / MEMORY_FILE,
        b"".join(orjson.dumps(e.model_dump(mode="json")) + b"\n" for e in examples),
    )
