"""``NAME_normalise``: the served model that turns a pixels-only client's 16-bit pixels into the
network's inputs.

A clinic PC that decodes, orients, colour-manages and crops the photo itself sends only what the
model sees: per input, the (S, S, 3) 16-bit pixels :func:`dgla_export.preprocess.to_pixels` makes.
The ensemble ``NAME_pixels`` runs this graph, then the network. It is an ONNX graph, not Python:
any Triton serves it (ONNX Runtime backend, CPU or GPU), and it is code nobody can change by
sending a request. Its arithmetic is :func:`dgla_export.preprocess.from_pixels`' in the same order
(cast, divide by 65535, subtract the mean, divide by the deviation, channels first), so the two agree
to the last bit on one machine (``tests/triton_repository/test_pixels.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dgla_export.preprocess import PIXEL_LEVELS

__all__ = ["NORMALISED", "OPSET", "PIXELS_METHOD", "normalise_graph"]

OPSET = 13
NORMALISED = "_normalised"  # the output for each input NAME is NAME_normalised (ONNX names are unique)
PIXELS_METHOD = "pixels_method"  # NAME_pixels' parameter: the preprocessing method its clients make pixels with


def normalise_graph(input_sizes: Mapping[str, int], mean: Sequence[float], std: Sequence[float]) -> bytes:
    """The serialised ONNX model: inputs ``NAME`` (N, S, S, 3) uint16, outputs ``NAME_normalised``
    (N, 3, S, S) float32, one pair per model input, checked by onnx's checker."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    constants = {
        "scale": np.array(PIXEL_LEVELS, dtype=np.float32),
        "mean": np.asarray(mean, dtype=np.float32),
        "std": np.asarray(std, dtype=np.float32),
    }
    nodes, inputs, outputs = [], [], []
    for name, size in input_sizes.items():
        inputs.append(helper.make_tensor_value_info(name, TensorProto.UINT16, ["N", size, size, 3]))
        outputs.append(helper.make_tensor_value_info(f"{name}{NORMALISED}", TensorProto.FLOAT, ["N", 3, size, size]))
        steps = [
            ("Cast", [name], {"to": TensorProto.FLOAT}),
            ("Div", ["scale"], {}),
            ("Sub", ["mean"], {}),
            ("Div", ["std"], {}),
            ("Transpose", [], {"perm": [0, 3, 1, 2]}),
        ]
        previous: list[str] = []
        for index, (op, operands, attributes) in enumerate(steps):
            out = f"{name}{NORMALISED}" if index == len(steps) - 1 else f"{name}_{index}"
            nodes.append(helper.make_node(op, previous + operands, [out], **attributes))
            previous = [out]
    graph = helper.make_graph(
        nodes,
        "dgla_normalise",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dgla-export")
    model.ir_version = 8  # what ONNX Runtime 1.x and Triton 2.51's backend read
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
