"""An n-gram graph's embedding bag, computed beside onnxruntime rather than inside it.

A ``fast`` graph (``l2model.fast``) starts by gathering the heads' weights of every column a
prompt holds and multiplying them by the prompt's values: a bag of weight rows. Inside
onnxruntime that bag costs a feed padded to the batch's longest prompt, a Gather writing
[N, L, H] floats and a batched MatMul: about 10 µs of a short prompt's 30 (same run), most
of it memory traffic, and a fixed cost a call (about 80 µs) that keeps a batch in runs of
64. Computed here it is one compiled pass over each prompt's own columns, without the GIL.

The graph on disk does not change: any onnxruntime runs it whole from the padded feed, and
that is the contract (``l2model.contract``). ``split_bag`` reads the bag back out of a graph
that starts with it, and gives the rest of the graph (the bias, the heads' slices, a memory's
kernels) with the bag's results as inputs; a graph that starts any other way (a candidate
whose memory gathers the columns itself) is left whole and runs from the padded feed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from numba import njit
from onnx import TensorProto, helper, numpy_helper

from l2model.contract import NGRAM_IDS, NGRAM_VALUES


@njit(cache=True, nogil=True)
def _bag(
    indptr: np.ndarray, columns: np.ndarray, values: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    docs = indptr.shape[0] - 1
    heads = weights.shape[1]
    sums = np.zeros((docs, heads), dtype=np.float32)
    # Summed in float64: a few hundred float32 products summed in float32 drift by a few
    # 1e-6 of the logit, in an order of their own.
    total = np.zeros(heads, dtype=np.float64)
    for d in range(docs):
        total[:] = 0.0
        for k in range(indptr[d], indptr[d + 1]):
            row = columns[k]
            value = np.float64(values[k])
            for h in range(heads):
                total[h] += value * weights[row, h]
        for h in range(heads):
            sums[d, h] = total[h]
    return sums


@njit(cache=True, nogil=True)
def _norms(indptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    docs = indptr.shape[0] - 1
    norms = np.zeros((docs, 1), dtype=np.float32)
    for d in range(docs):
        total = 0.0
        for k in range(indptr[d], indptr[d + 1]):
            total += values[k] * values[k]
        norms[d, 0] = np.sqrt(total)
    return norms


@dataclass(frozen=True)
class Bag:
    """The bag's weights [columns + 1, H] (the padding column's row is zero), the name of
    the tensor it computes, [N, H], and the names of the features' L2 norms [N, 1] that the
    rest of the graph reads (a memory's), if any."""

    weights: np.ndarray
    sums: str
    norms: tuple[str, ...]

    def feed(
        self, indptr: np.ndarray, columns: np.ndarray, values: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The rest of the graph's inputs for a batch's CSR rows (``SparseRows``)."""
        feed = {self.sums: _bag(indptr, columns, values, self.weights)}
        if self.norms:
            norms = _norms(indptr, values)
            feed.update(dict.fromkeys(self.norms, norms))
        return feed


@dataclass(frozen=True)
class SplitGraph:
    bag: Bag
    rest: onnx.ModelProto


def _consumers(graph: onnx.GraphProto, names: Iterable[str]) -> list[onnx.NodeProto]:
    wanted = set(names)
    return [node for node in graph.node if wanted.intersection(node.input)]


def _const(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            array: np.ndarray = numpy_helper.to_array(init)
            return array
    return None


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(helper.get_attribute_value(attr))
    return default


def _axis_one(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """Whether ``node``'s axes input (its second) is the constant [1]."""
    axes = _const(graph, node.input[1]) if len(node.input) > 1 else None
    return axes is not None and axes.tolist() == [1]


def split_bag(model: onnx.ModelProto) -> SplitGraph | None:
    """The bag and the rest of the graph, when the graph's only reads of ``ngram_ids`` and
    ``ngram_values`` are the bag (Gather of a constant table by the ids, the values as a row
    times the gathered rows, squeezed) and their L2 norms along the prompt; else None."""
    graph = model.graph
    if {NGRAM_IDS, NGRAM_VALUES} - {i.name for i in graph.input}:
        return None
    # The values and their Identity copies (the graph names them ``features`` too).
    aliases = {NGRAM_VALUES}
    removed: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in aliases:
            aliases.add(node.output[0])
            removed.append(node)
    gathers = _consumers(graph, [NGRAM_IDS])
    if len(gathers) != 1 or gathers[0].op_type != "Gather" or gathers[0].input[1] != NGRAM_IDS:
        return None
    gather = gathers[0]
    table = _const(graph, gather.input[0])
    if table is None or table.ndim != 2 or _attribute(gather, "axis", 0) != 0:
        return None
    products = _consumers(graph, gather.output)
    if (
        len(products) != 1
        or products[0].op_type != "MatMul"
        or products[0].input[1] != gather.output[0]
    ):
        return None
    matmul = products[0]
    squeezes = _consumers(graph, matmul.output)
    if len(squeezes) != 1 or squeezes[0].op_type != "Squeeze" or not _axis_one(graph, squeezes[0]):
        return None
    squeeze = squeezes[0]
    norms: list[str] = []
    for node in _consumers(graph, aliases):
        if node in removed:
            continue
        if node.op_type == "Unsqueeze" and node.output[0] == matmul.input[0]:
            if not _axis_one(graph, node) or _consumers(graph, node.output) != [matmul]:
                return None
        elif node.op_type == "ReduceL2" and _axis_one(graph, node):
            if _attribute(node, "keepdims", 1) != 1:
                return None
            norms.append(node.output[0])
        else:
            return None
        removed.append(node)
    if not any(n.op_type == "Unsqueeze" for n in removed):
        return None
    removed += [gather, matmul, squeeze]
    inner = {out for node in removed for out in node.output} | {NGRAM_IDS, NGRAM_VALUES}
    computed = {squeeze.output[0], *norms}
    if any(o.name in inner for o in graph.output) or any(
        set(node.input) & (inner - computed) for node in graph.node if node not in removed
    ):
        return None
    kept = [node for node in graph.node if node not in removed]
    used = {name for node in kept for name in node.input}
    heads = table.shape[1]
    inputs = [
        helper.make_tensor_value_info(squeeze.output[0], TensorProto.FLOAT, ["N", heads]),
        *(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 1]) for name in norms),
        *(i for i in graph.input if i.name not in (NGRAM_IDS, NGRAM_VALUES)),
    ]
    rest_graph = helper.make_graph(
        kept,
        graph.name,
        inputs,
        list(graph.output),
        initializer=[i for i in graph.initializer if i.name in used],
    )
    rest = helper.make_model(rest_graph, opset_imports=list(model.opset_import))
    rest.ir_version = model.ir_version
    bag = Bag(np.ascontiguousarray(table, np.float32), squeeze.output[0], tuple(norms))
    return SplitGraph(bag, rest)
