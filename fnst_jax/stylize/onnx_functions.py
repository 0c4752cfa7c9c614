"""The tiling functions an exported ONNX file carries, run in onnxruntime (no JAX).

Besides its graph, an fnst_jax ONNX file holds two model-local functions that nothing in the
graph calls (`deploy.onnx_graph`'s module docstring): `tile_forward`, the network in its box form
normalised with given statistics, and `norm_moments`, the statistics of a network input.
`FunctionSessions.run(function, outputs, feeds)` runs one of them: it builds a model whose
graph is the function's body, keeping only the nodes the requested outputs need, with the
graph's initializers that body uses (the function's parameters are named after them, and its
data inputs keep their names, so the body runs as written), and keeps one onnxruntime session
per (function, outputs). An exact-statistics pass asks for one norm layer's summary, so its
session stops at that layer, as the JAX engine's passes do.

Needs the `onnx` package (to read the functions), which the onnx extra installs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fnst_jax.deploy_interface import (
    BOX_INPUT,
    FUNCTION_DOMAIN,
    INTERIOR_INPUT,
    MOMENTS_FUNCTION,
    TILE_FUNCTION,
    TILE_INPUT,
)
from fnst_jax.errors import UserError


class FunctionSessions:
    """The tiling functions of one ONNX file, as onnxruntime sessions made on first use."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str]):
        """path: an .onnx file written by `python -m fnst_jax.export`; providers: the
        onnxruntime execution providers of the sessions."""
        try:
            import onnx
        except ImportError as e:
            raise UserError(
                f"{path}: tiling an ONNX model needs the onnx package ({e}): "
                "pip install -e '.[onnx]'"
            ) from None
        model = onnx.load(str(path))
        self.functions = {f.name: f for f in model.functions if f.domain == FUNCTION_DOMAIN}
        missing = {TILE_FUNCTION, MOMENTS_FUNCTION} - set(self.functions)
        if missing:
            raise UserError(
                f"{path}: this ONNX file has no tiling functions ({', '.join(sorted(missing))}"
                "; it was exported by an older fnst_jax): export it again, or raise "
                "--max-pixels (memory grows with it) so the image runs whole"
            )
        self.path = path
        self.initializers = {tensor.name: tensor for tensor in model.graph.initializer}
        self.opset_imports = [o for o in model.opset_import if o.domain != FUNCTION_DOMAIN]
        self.ir_version = model.ir_version
        self.providers = list(providers)
        self._sessions: dict[tuple[str, tuple[str, ...]], Any] = {}

    def run(
        self, function: str, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The requested outputs of `function` for `feeds` (inputs the outputs do not need
        may be given; they are left out)."""
        session = self._session(function, tuple(outputs))
        needed = {i.name for i in session.get_inputs()}
        return session.run(list(outputs), {k: v for k, v in feeds.items() if k in needed})

    def _session(self, function: str, outputs: tuple[str, ...]) -> Any:
        key = (function, outputs)
        if key not in self._sessions:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            # Up to 16 sessions live at once (one per exact-statistics pass): without the
            # arena each returns its activations after every call instead of keeping its
            # own high-water mark (5.6 GB of RSS at 640 px tiles with it, measured).
            options.enable_cpu_mem_arena = False
            data = self.model(function, outputs).SerializeToString()
            self._sessions[key] = onnxruntime.InferenceSession(
                data, options, providers=self.providers
            )
        return self._sessions[key]

    def model(self, function: str, outputs: Sequence[str]) -> Any:
        """An onnx ModelProto computing `outputs` of `function` from its data inputs."""
        from onnx import TensorProto, helper

        body = self.functions[function]
        nodes = _needed_nodes(body.node, outputs)
        used = {name for node in nodes for name in node.input}
        data_inputs = [
            name for name in body.input if name in used and name not in self.initializers
        ]
        types = {
            TILE_INPUT: (TensorProto.UINT8, ["batch", "height", "width", 3]),
            BOX_INPUT: (TensorProto.INT64, [4]),
            INTERIOR_INPUT: (TensorProto.INT64, [4]),
        }
        graph = helper.make_graph(
            nodes,
            f"{function}_{len(nodes)}",
            [
                helper.make_tensor_value_info(
                    name, *types.get(name, (TensorProto.FLOAT, ["channels"]))
                )
                for name in data_inputs
            ],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
            initializer=[
                self.initializers[name]
                for name in body.input
                if name in used and name in self.initializers
            ],
        )
        return helper.make_model(
            graph, opset_imports=self.opset_imports, ir_version=self.ir_version
        )


def _needed_nodes(nodes: Sequence[Any], outputs: Sequence[str]) -> list[Any]:
    """The nodes (in their order) that `outputs` depend on."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    missing = set(outputs) - {name for node in kept for name in node.output}
    if missing:
        raise ValueError(f"no node computes {sorted(missing)}")
    return kept[::-1]
