"""Small edits of a converter's ONNX graph, shared by the families exported by onnxmltools and skl2onnx: rename
an output to the serving contract's name, and drop the branches (a classifier's label) that no output needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


def rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a value everywhere it is produced or read."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def keep_only(graph: onnx.GraphProto, output: str) -> None:
    """Remove the nodes that do not lead to `output` (the converter's label branch)."""
    needed, kept = {output}, []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
