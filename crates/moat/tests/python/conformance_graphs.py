"""The conformance suite's ONNX graphs, written with onnx.helper, and onnxruntime's answers.

Usage: conformance_graphs.py OUT_DIR

For every case of CASES and every opset it lists (9, 11, 13, 17 unless it says otherwise), writes
  OUT_DIR/repo/<case>-op<opset>/1/model.onnx   a model repository `moat serve` can serve,
  OUT_DIR/inputs/<case>-op<opset>.npy          a batch of 3 inputs (seeded normal values),
  OUT_DIR/expected/<case>-op<opset>.npz        onnxruntime's value of every declared output,
and OUT_DIR/cases.json: one entry per model with its ONNX input and output names, as a user reads
them from the file.

A case is a function of the opset returning a Graph: nodes, initializers, the input's name and
per-sample shape, and the declared outputs. Where an op's attributes changed across opsets (Clip,
Pad, Squeeze/Unsqueeze, Slice, Softmax, Dropout, HardSwish from 14), the builder writes the form
of that opset. To
cover a new op, add a case with @case(...) below: the Rust test picks it up from cases.json.
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSETS = (9, 11, 13, 17)
# The IR version each opset needs (onnx.helper.VERSION_TABLE), as exporters of the time wrote.
IR_VERSION = {9: 4, 10: 5, 11: 6, 13: 7, 14: 7, 17: 8, 18: 8, 20: 9, 24: 11}
BATCH = 3
RNG = np.random.default_rng(20261203)

CASES = []


def case(name, opsets=OPSETS, acceptance=False, scale=1.0, approximated=None):
    """Registers a case builder for the given opsets (acceptance: part of the Triton-client check;
    scale: of the seeded inputs; approximated: {output: op} for outputs that are an approximated
    activation of the input, which the Rust test holds to the op's documented error in fixed
    point)."""

    def register(build):
        CASES.append({
            "name": name,
            "opsets": opsets,
            "build": build,
            "acceptance": acceptance,
            "scale": scale,
            "approximated": approximated or {},
        })
        return build

    return register


class Graph:
    def __init__(self, input_name, sample_shape, outputs):
        self.input_name = input_name
        self.sample_shape = list(sample_shape)
        self.outputs = list(outputs)  # names of the declared outputs
        self.nodes = []
        self.inits = []

    def w(self, name, shape, scale=0.5):
        self.inits.append(numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, outputs, **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{len(self.nodes)}", **attrs))
        return outputs[0]


def axes_form(g, op, x, out, axes, opset):
    """Squeeze/Unsqueeze: `axes` attribute before opset 13, an input from 13 on."""
    if opset < 13:
        return g.node(op, [x], [out], axes=axes)
    return g.node(op, [x, g.const(out + "_axes", np.array(axes, dtype=np.int64))], [out])


def softmax(g, x, out, opset):
    """Softmax over the class axis of [N, K]: axis 1 (the pre-13 default coerces to 2-D)."""
    return g.node("Softmax", [x], [out]) if opset >= 13 else g.node("Softmax", [x], [out], axis=1)


# ---- the acceptance graphs: a classifier ending in Softmax, one ending in Gemm, multi-output ----


@case("softmax_head", acceptance=True)
def softmax_head(opset):
    g = Graph("pixels", [12], ["probabilities_out"])
    h = g.node("Gemm", ["pixels", g.w("W1", [16, 12]), g.w("b1", [16])], ["h"], transB=1)
    r = g.node("Relu", [h], ["r"])
    z = g.node("Gemm", [r, g.w("W2", [16, 7]), g.w("b2", [7])], ["z"])
    softmax(g, z, "probabilities_out", opset)
    return g


@case("gemm_head", acceptance=True)
def gemm_head(opset):
    g = Graph("features", [10], ["scores"])
    h = g.node("Gemm", ["features", g.w("W1", [10, 8]), g.w("b1", [8])], ["h"], alpha=0.5, beta=2.0)
    r = g.node("Relu", [h], ["r"])
    g.node("Gemm", [r, g.w("W2", [5, 8]), g.w("b2", [5])], ["scores"], transB=1)
    return g


@case("multi_output", acceptance=True)
def multi_output(opset):
    g = Graph("x", [2, 4, 4], ["logits", "probs", "embedding"])
    c = g.node("Conv", ["x", g.w("k", [3, 2, 3, 3]), g.w("kb", [3])], ["c"], pads=[1, 1, 1, 1])
    r = g.node("Relu", [c], ["r"])
    e = g.node("Flatten", [r], ["embedding"], axis=1)
    z = g.node("Gemm", [e, g.w("W", [6, 48]), g.w("b", [6])], ["logits"], transB=1)
    softmax(g, z, "probs", opset)
    return g


# ---- every op and attribute form moat supports today ----


@case("conv_relu_maxpool")
def conv_relu_maxpool(opset):
    g = Graph("image", [3, 8, 8], ["y"])
    c = g.node("Conv", ["image", g.w("k", [4, 3, 3, 3]), g.w("kb", [4])], ["c"], pads=[1, 1, 1, 1], strides=[1, 1])
    r = g.node("Relu", [c], ["r"])
    p = g.node("MaxPool", [r], ["p"], kernel_shape=[2, 2], strides=[2, 2])
    f = g.node("Flatten", [p], ["f"], axis=1)
    g.node("Gemm", [f, g.w("W", [5, 64]), g.w("b", [5])], ["y"], transB=1)
    return g


@case("conv_strided_autopad")
def conv_strided_autopad(opset):
    g = Graph("x", [2, 7, 7], ["y"])
    c = g.node("Conv", ["x", g.w("k", [3, 2, 3, 3])], ["c"], auto_pad="SAME_UPPER", strides=[2, 2])
    g.node("Relu", [c], ["y"])
    return g


@case("conv_batchnorm_gap")
def conv_batchnorm_gap(opset):
    g = Graph("x", [3, 6, 6], ["y"])
    c = g.node("Conv", ["x", g.w("k", [4, 3, 3, 3]), g.w("kb", [4])], ["c"])
    scale, bias, mean = g.w("s", [4]), g.w("bb", [4]), g.w("m", [4])
    g.const("v", (RNG.random(4) + 0.5).astype(np.float32))
    n = g.node("BatchNormalization", [c, scale, bias, mean, "v"], ["n"], epsilon=1e-3)
    r = g.node("Relu", [n], ["r"])
    p = g.node("GlobalAveragePool", [r], ["p"])
    f = g.node("Flatten", [p], ["f"])
    g.node("Gemm", [f, g.w("W", [3, 4]), g.w("b", [3])], ["y"], transB=1)
    return g


@case("pad_into_conv_and_avgpool")
def pad_into_conv_and_avgpool(opset):
    g = Graph("x", [2, 5, 5], ["y"])
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    if opset < 11:
        p = g.node("Pad", ["x"], ["p"], pads=pads, mode="constant", value=0.0)
    else:
        p = g.node("Pad", ["x", g.const("pads", np.array(pads, dtype=np.int64))], ["p"], mode="constant")
    c = g.node("Conv", [p, g.w("k", [2, 2, 3, 3]), g.w("kb", [2])], ["c"])
    r = g.node("Relu", [c], ["r"])
    g.node("AveragePool", [r], ["y"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1)
    return g


@case("residual_add_concat")
def residual_add_concat(opset):
    g = Graph("x", [4, 5, 5], ["y"])
    a = g.node("Conv", ["x", g.w("k1", [4, 4, 3, 3]), g.w("b1", [4])], ["a"], pads=[1, 1, 1, 1])
    ra = g.node("Relu", [a], ["ra"])
    b = g.node("Conv", [ra, g.w("k2", [4, 4, 1, 1])], ["b"])
    s = g.node("Add", ["x", b], ["s"])
    rs = g.node("Relu", [s], ["rs"])
    g.node("Concat", [rs, ra], ["y"], axis=1)
    return g


@case("sum_of_three_and_one")
def sum_of_three_and_one(opset):
    """Sum of three computed values (moat: two Adds), and Sum of one (a pass-through)."""
    g = Graph("x", [2, 4, 4], ["y"])
    a = g.node("Conv", ["x", g.w("ka", [2, 2, 3, 3]), g.w("ba", [2])], ["a"], pads=[1, 1, 1, 1])
    r = g.node("Relu", [a], ["ra"])
    s = g.node("Sum", ["x", a, r], ["s"])
    one = g.node("Sum", [s], ["one"])
    r = g.node("Relu", [one], ["r"])
    f = g.node("Flatten", [r], ["f"], axis=1)
    g.node("Gemm", [f, g.w("W", [3, 32]), g.w("bias", [3])], ["y"], transB=1)
    return g


@case("max_of_three")
def max_of_three(opset):
    """Element-wise Max of three computed values of equal shape."""
    g = Graph("x", [2, 4, 4], ["y"])
    a = g.node("Conv", ["x", g.w("ka", [2, 2, 3, 3]), g.w("ba", [2])], ["a"], pads=[1, 1, 1, 1])
    r = g.node("Relu", [a], ["ra"])
    m = g.node("Max", ["x", a, r], ["m"])
    f = g.node("Flatten", [m], ["f"], axis=1)
    g.node("Gemm", [f, g.w("W", [3, 32]), g.w("bias", [3])], ["y"], transB=1)
    return g


@case("matmul_add")
def matmul_add(opset):
    g = Graph("x", [3, 2, 2], ["y"])
    f = g.node("Flatten", ["x"], ["f"], axis=1)
    m = g.node("MatMul", [f, g.w("W", [12, 6])], ["m"])
    g.node("Add", [m, g.w("b", [6])], ["y"])
    return g


@case("affine_constants_clip")
def affine_constants_clip(opset):
    g = Graph("x", [3, 4, 4], ["y"])
    m = g.node("Mul", ["x", g.w("scale", [3, 1, 1])], ["m"])
    a = g.node("Add", [m, g.w("shift", [3, 1, 1])], ["a"])
    s = g.node("Sub", [a, g.const("half", np.array(0.5, dtype=np.float32))], ["s"])
    d = g.node("Div", [s, g.const("two", np.array(2.0, dtype=np.float32))], ["d"])
    if opset < 11:
        g.node("Clip", [d], ["y"], min=0.0)
    else:
        g.node("Clip", [d, g.const("zero", np.array(0.0, dtype=np.float32))], ["y"])
    return g


@case("torch_view_reshape")
def torch_view_reshape(opset):
    """PyTorch's x.view(x.size(0), -1): Shape → Gather → Unsqueeze → Concat → Reshape."""
    g = Graph("x", [2, 3, 3], ["y"])
    c = g.node("Conv", ["x", g.w("k", [2, 2, 1, 1])], ["c"])
    shape = g.node("Shape", [c], ["shape"])
    n = g.node("Gather", [shape, g.const("zero", np.array(0, dtype=np.int64))], ["n"], axis=0)
    n1 = axes_form(g, "Unsqueeze", n, "n1", [0], opset)
    target = g.node("Concat", [n1, g.const("minus1", np.array([-1], dtype=np.int64))], ["target"], axis=0)
    g.node("Reshape", [c, target], ["y"])
    return g


@case("slice_shape_reshape")
def slice_shape_reshape(opset):
    """The batch size by Slice of Shape (attribute form before opset 10), then Reshape."""
    g = Graph("x", [4, 2, 2], ["y"])
    shape = g.node("Shape", ["x"], ["shape"])
    if opset < 10:
        n = g.node("Slice", [shape], ["n"], starts=[0], ends=[1], axes=[0])
    else:
        consts = [g.const(k, np.array([v], dtype=np.int64)) for k, v in (("s0", 0), ("s1", 1), ("ax", 0))]
        n = g.node("Slice", [shape] + consts, ["n"])
    target = g.node("Concat", [n, g.const("rest", np.array([16], dtype=np.int64))], ["target"], axis=0)
    r = g.node("Reshape", ["x", target], ["r"])
    g.node("Gemm", [r, g.w("W", [4, 16]), g.w("b", [4])], ["y"], transB=1)
    return g


@case("squeeze_unsqueeze_transpose")
def squeeze_unsqueeze_transpose(opset):
    g = Graph("x", [3, 4, 4], ["y"])
    p = g.node("GlobalAveragePool", ["x"], ["p"])
    t = g.node("Transpose", [p], ["t"], perm=[0, 2, 3, 1])
    s = axes_form(g, "Squeeze", t, "s", [1, 2], opset)
    u = axes_form(g, "Unsqueeze", s, "u", [2], opset)
    f = g.node("Flatten", [u], ["f"])
    g.node("Gemm", [f, g.w("W", [3, 2]), g.w("b", [2])], ["y"])
    return g


@case("mobile_ops_grouped_relu6_leaky_shuffle")
def mobile_ops_grouped_relu6_leaky_shuffle(opset):
    """Channels-last input, depthwise and grouped Conv, Clip as ReLU6, LeakyRelu, a channel shuffle."""
    g = Graph("x", [6, 6, 4], ["y"])
    t = g.node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2])  # NHWC -> NCHW
    d = g.node("Conv", [t, g.w("dw", [4, 1, 3, 3]), g.w("dwb", [4])], ["d"], pads=[1, 1, 1, 1], group=4)
    if opset < 11:
        r = g.node("Clip", [d], ["r"], min=0.0, max=6.0)
    else:
        zero = g.const("zero", np.array(0.0, dtype=np.float32))
        six = g.const("six", np.array(6.0, dtype=np.float32))
        r = g.node("Clip", [d, zero, six], ["r"])
    c = g.node("Conv", [r, g.w("gw", [6, 2, 1, 1]), g.w("gb", [6])], ["c"], group=2)
    lk = g.node("LeakyRelu", [c], ["lk"], alpha=0.2)
    five = g.const("shape5", np.array([0, 2, 3, 6, 6], dtype=np.int64))
    a = g.node("Reshape", [lk, five], ["a"])
    b = g.node("Transpose", [a], ["shuffled"], perm=[0, 2, 1, 3, 4])
    four = g.const("shape4", np.array([0, 6, 6, 6], dtype=np.int64))
    sh = g.node("Reshape", [b, four], ["sh"])
    f = g.node("Flatten", [sh], ["f"], axis=1)
    g.node("Gemm", [f, g.w("W", [4, 216]), g.w("b", [4])], ["y"], transB=1)
    return g


@case("dropout_identity_cast_constant")
def dropout_identity_cast_constant(opset):
    g = Graph("x", [6], ["y"])
    if opset < 12:
        d = g.node("Dropout", ["x"], ["d"], ratio=0.25)
    else:
        d = g.node("Dropout", ["x"], ["d"])
    i = g.node("Identity", [d], ["i"])
    c = g.node("Cast", [i], ["c"], to=TensorProto.FLOAT)
    w = (RNG.standard_normal((6, 4)) * 0.5).astype(np.float32)
    k = g.node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w"))
    g.node("MatMul", [c, k], ["y"])
    return g


@case("constant_of_shape_scale")
def constant_of_shape_scale(opset):
    """A folded ConstantOfShape: a per-feature constant the importer evaluates."""
    g = Graph("x", [4], ["y"])
    value = numpy_helper.from_array(np.array([1.5], dtype=np.float32), "value")
    c = g.node("ConstantOfShape", [g.const("dims", np.array([4], dtype=np.int64))], ["c"], value=value)
    m = g.node("Mul", ["x", c], ["m"])
    g.node("Relu", [m], ["y"])
    return g


@case("prelu_reduce_mean", opsets=OPSETS + (18,))
def prelu_reduce_mean(opset):
    """PRelu with one slope (as a [C, 1, 1] constant) and with one slope per channel, ReduceMean
    over H, W kept ([N, C, 1, 1], declared as such) and dropped (axes an attribute before opset
    18, an input from 18), GlobalAveragePool as a declared [N, C, 1, 1] output."""
    g = Graph("x", [3, 5, 5], ["y", "kept", "gap"])
    c = g.node("Conv", ["x", g.w("k", [3, 3, 3, 3]), g.w("kb", [3])], ["c"], pads=[1, 1, 1, 1])
    one = g.node("PRelu", [c, g.const("slope", np.full((3, 1, 1), 0.15, dtype=np.float32))], ["one"])
    slopes = np.array([0.1, -0.3, 0.6], dtype=np.float32).reshape(3, 1, 1)
    p = g.node("PRelu", [one, g.const("slopes", slopes)], ["p"])
    if opset < 18:
        kept = g.node("ReduceMean", [p], ["kept"], axes=[2, 3])
        m = g.node("ReduceMean", [p], ["m"], axes=[-1, -2], keepdims=0)
    else:
        kept = g.node("ReduceMean", [p, g.const("axes", np.array([2, 3], dtype=np.int64))], ["kept"])
        m = g.node("ReduceMean", [p, g.const("axes_neg", np.array([-1, -2], dtype=np.int64))], ["m"], keepdims=0)
    g.node("GlobalAveragePool", [p], ["gap"])
    g.node("Gemm", [m, g.w("W", [4, 3]), g.w("b", [4])], ["y"], transB=1)
    return g


# ---- approximated activations: each output is the activation of the input itself, so the
# fixed-point execution's error against onnxruntime is the op's documented bound (plus the
# input's own rounding); inputs span [-20, 20] to reach every segment and both tails ----


@case("sigmoid_tanh_hard_sigmoid", scale=6.0,
      approximated={"sig": "Sigmoid", "th": "Tanh", "hsig": "HardSigmoid", "hsig_custom": "HardSigmoid"})
def sigmoid_tanh_hard_sigmoid(opset):
    g = Graph("x", [2, 4, 4], ["sig", "th", "hsig", "hsig_custom"])
    g.node("Sigmoid", ["x"], ["sig"])
    g.node("Tanh", ["x"], ["th"])
    g.node("HardSigmoid", ["x"], ["hsig"])
    g.node("HardSigmoid", ["x"], ["hsig_custom"], alpha=0.25, beta=0.375)
    return g


@case("hard_swish", opsets=(14, 17), scale=4.0, approximated={"hswish": "HardSwish"})
def hard_swish(opset):
    g = Graph("x", [2, 4, 4], ["hswish", "y"])
    h = g.node("HardSwish", ["x"], ["hswish"])
    c = g.node("Conv", [h, g.w("k", [3, 2, 3, 3]), g.w("kb", [3])], ["c"], pads=[1, 1, 1, 1])
    s = g.node("Sigmoid", [c], ["s"])
    f = g.node("Flatten", [s], ["f"], axis=1)
    g.node("Gemm", [f, g.w("W", [4, 48]), g.w("b", [4])], ["y"], transB=1)
    return g


@case("hard_swish_as_mul", opsets=(9, 11, 13), scale=4.0, approximated={"hswish": "HardSwish"})
def hard_swish_as_mul(opset):
    """HardSwish before opset 14, as PyTorch exports it: x * HardSigmoid(x; 1/6, 1/2)."""
    g = Graph("x", [2, 4, 4], ["hswish"])
    gate = g.node("HardSigmoid", ["x"], ["gate"], alpha=1.0 / 6.0, beta=0.5)
    g.node("Mul", ["x", gate], ["hswish"])
    return g



@case("silu_gelu_elu", scale=4.0, approximated={
    "silu": "Silu", "gelu": "Gelu", "gelu_half_first": "Gelu", "elu": "Elu", "elu_half": "Elu"})
def silu_gelu_elu(opset):
    """SiLU as PyTorch writes it (x * Sigmoid(x)); GELU's Erf pattern in PyTorch's form
    (Div by sqrt 2, Erf, Add 1, Mul x, Mul 0.5) and with 0.5 * x formed first and x / sqrt 2 as
    a Mul; Elu with the default alpha and with 0.5."""
    g = Graph("x", [2, 4, 4], ["silu", "gelu", "gelu_half_first", "elu", "elu_half"])
    gate = g.node("Sigmoid", ["x"], ["gate"])
    g.node("Mul", ["x", gate], ["silu"])
    sqrt2 = g.const("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    one = g.const("one", np.array(1.0, dtype=np.float32))
    half = g.const("half", np.array(0.5, dtype=np.float32))
    d = g.node("Div", ["x", sqrt2], ["d"])
    e = g.node("Erf", [d], ["e"])
    a = g.node("Add", [e, one], ["a"])
    m = g.node("Mul", ["x", a], ["m"])
    g.node("Mul", [m, half], ["gelu"])
    h = g.node("Mul", [half, "x"], ["h"])
    inv = g.const("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), dtype=np.float32))
    d2 = g.node("Mul", ["x", inv], ["d2"])
    e2 = g.node("Erf", [d2], ["e2"])
    a2 = g.node("Add", [one, e2], ["a2"])
    g.node("Mul", [a2, h], ["gelu_half_first"])
    g.node("Elu", ["x"], ["elu"])
    g.node("Elu", ["x"], ["elu_half"], alpha=0.5)
    return g


@case("gelu_op_network", opsets=(20,), scale=2.0, approximated={"gelu": "Gelu"})
def gelu_op_network(opset):
    """The opset-20 Gelu op, on the input and between a convolution and an ELU in a network."""
    g = Graph("x", [2, 4, 4], ["gelu", "y"])
    g.node("Gelu", ["x"], ["gelu"])
    c = g.node("Conv", ["x", g.w("k", [3, 2, 3, 3]), g.w("kb", [3])], ["c"], pads=[1, 1, 1, 1])
    act = g.node("Gelu", [c], ["act"])
    el = g.node("Elu", [act], ["el"], alpha=0.75)
    f = g.node("Flatten", [el], ["f"], axis=1)
    g.node("Gemm", [f, g.w("W", [4, 48]), g.w("b", [4])], ["y"], transB=1)
    return g


@case("selu_softplus_softsign", scale=4.0,
      approximated={"selu": "Selu", "selu_custom": "Selu", "softplus": "Softplus", "softsign": "Softsign"})
def selu_softplus_softsign(opset):
    """Selu with ONNX's defaults (self-normalising networks export it so) and with its own alpha
    and gamma; Softplus; Softsign."""
    g = Graph("x", [2, 4, 4], ["selu", "selu_custom", "softplus", "softsign"])
    g.node("Selu", ["x"], ["selu"])
    g.node("Selu", ["x"], ["selu_custom"], alpha=0.5, gamma=1.25)
    g.node("Softplus", ["x"], ["softplus"])
    g.node("Softsign", ["x"], ["softsign"])
    return g


@case("gelu_tanh_network", opsets=(20,), scale=2.0, approximated={"gelu_tanh": "GeluTanh"})
def gelu_tanh_network(opset):
    """The opset-20 Gelu with approximate = "tanh", on the input and between a convolution and a
    Selu in a network."""
    g = Graph("x", [2, 4, 4], ["gelu_tanh", "y"])
    g.node("Gelu", ["x"], ["gelu_tanh"], approximate="tanh")
    c = g.node("Conv", ["x", g.w("k", [3, 2, 3, 3]), g.w("kb", [3])], ["c"], pads=[1, 1, 1, 1])
    act = g.node("Gelu", [c], ["act"], approximate="tanh")
    s = g.node("Selu", [act], ["s"])
    f = g.node("Flatten", [s], ["f"], axis=1)
    g.node("Gemm", [f, g.w("W", [4, 48]), g.w("b", [4])], ["y"], transB=1)
    return g


@case("gelu_tanh_pattern", scale=2.0,
      approximated={"gelu_tanh": "GeluTanh", "gelu_new": "GeluTanh"})
def gelu_tanh_pattern(opset):
    """GELU's tanh form before opset 20: PyTorch's symbolic (x * (x * x), constants first,
    (x * s) * 0.5) and transformer code's gelu_new (0.5 * x first, Pow(x, 3))."""
    g = Graph("x", [2, 4, 4], ["gelu_tanh", "gelu_new"])
    three = g.const("three", np.array(3.0, dtype=np.float32))
    kappa = g.const("kappa", np.array(0.044715, dtype=np.float32))
    beta = g.const("beta", np.array(np.sqrt(2.0 / np.pi), dtype=np.float32))
    one = g.const("one", np.array(1.0, dtype=np.float32))
    half = g.const("half", np.array(0.5, dtype=np.float32))
    sq = g.node("Mul", ["x", "x"], ["sq"])
    c = g.node("Mul", ["x", sq], ["c"])
    kc = g.node("Mul", [kappa, c], ["kc"])
    i = g.node("Add", ["x", kc], ["i"])
    bi = g.node("Mul", [beta, i], ["bi"])
    t = g.node("Tanh", [bi], ["t"])
    s = g.node("Add", [one, t], ["s"])
    p = g.node("Mul", ["x", s], ["p"])
    g.node("Mul", [half, p], ["gelu_tanh"])
    h = g.node("Mul", [half, "x"], ["h"])
    c2 = g.node("Pow", ["x", three], ["c2"])
    kc2 = g.node("Mul", [c2, kappa], ["kc2"])
    i2 = g.node("Add", [kc2, "x"], ["i2"])
    bi2 = g.node("Mul", [i2, beta], ["bi2"])
    t2 = g.node("Tanh", [bi2], ["t2"])
    s2 = g.node("Add", [t2, one], ["s2"])
    g.node("Mul", [h, s2], ["gelu_new"])
    return g


@case("resize_nearest", opsets=(10, 11, 13, 17))
def resize_nearest(opset):
    """Nearest Resize by whole factors inside a network (a decoder's upsampling): ONNX's default
    rule (half_pixel, round_prefer_floor; Resize-10: its own), PyTorch's nn.Upsample export
    (asymmetric, floor), and from opset 11 sizes instead of scales."""
    g = Graph("x", [2, 3, 3], ["up", "y"])
    c = g.node("Conv", ["x", g.w("k", [3, 2, 3, 3]), g.w("kb", [3])], ["c"], pads=[1, 1, 1, 1])
    r = g.node("Relu", [c], ["r"])
    if opset == 10:
        g.node("Resize", [r, g.const("s1", np.array([1, 1, 2, 2], dtype=np.float32))], ["up"])
        up2 = g.node("Resize", ["up", g.const("s2", np.array([1, 1, 1, 2], dtype=np.float32))], ["up2"])
    else:
        # Opsets 11–12 need the roi and scales inputs present (empty when unused).
        roi = g.const("roi", np.zeros([0], dtype=np.float32))
        none = g.const("no_scales", np.zeros([0], dtype=np.float32))
        g.node("Resize", [r, roi, g.const("s1", np.array([1, 1, 2, 2], dtype=np.float32))], ["up"])
        sizes = g.const("sizes", np.array([BATCH, 3, 6, 12], dtype=np.int64))
        up2 = g.node("Resize", ["up", roi, none, sizes], ["up2"],
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    c2 = g.node("Conv", [up2, g.w("k2", [2, 3, 3, 3]), g.w("k2b", [2])], ["c2"], pads=[1, 1, 1, 1])
    f = g.node("Flatten", [c2], ["f"], axis=1)
    g.node("Gemm", [f, g.w("W", [4, 144]), g.w("b", [4])], ["y"], transB=1)
    return g


@case("upsample", opsets=(9,))
def upsample(opset):
    """Upsample (opset 9, nearest, scales as an input), as older exporters wrote it."""
    g = Graph("x", [2, 3, 3], ["up"])
    g.node("Upsample", ["x", g.const("scales", np.array([1, 1, 2, 3], dtype=np.float32))], ["up"], mode="nearest")
    return g


@case("swish", opsets=(24,), scale=4.0, approximated={"swish": "Silu"})
def swish(opset):
    """ONNX Swish (opset 24) with its default alpha = 1: SiLU."""
    g = Graph("x", [2, 4, 4], ["swish"])
    g.node("Swish", ["x"], ["swish"])
    return g


def build_model(spec, opset):
    g = spec["build"](opset)
    inputs = [helper.make_tensor_value_info(g.input_name, TensorProto.FLOAT, ["N"] + g.sample_shape)]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in g.outputs]
    graph = helper.make_graph(g.nodes, f"{spec['name']}_op{opset}", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="moat-conformance")
    model.ir_version = IR_VERSION[opset]
    # The declared outputs' shapes [N, ...], as exporters write them, from one onnxruntime run.
    probe = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros([1] + g.sample_shape, dtype=np.float32)
    shapes = [v.shape for v in probe.run(g.outputs, {g.input_name: x})]
    del model.graph.output[:]
    model.graph.output.extend(
        helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N"] + list(s[1:])) for o, s in zip(g.outputs, shapes)
    )
    onnx.checker.check_model(model, full_check=True)
    return model, g


def main():
    out = sys.argv[1]
    listing = []
    for spec in CASES:
        for opset in spec["opsets"]:
            model, g = build_model(spec, opset)
            name = f"{spec['name']}-op{opset}"
            repo = os.path.join(out, "repo", name, "1")
            os.makedirs(repo, exist_ok=True)
            for sub in ("inputs", "expected"):
                os.makedirs(os.path.join(out, sub), exist_ok=True)
            path = os.path.join(repo, "model.onnx")
            onnx.save(model, path)
            x = (RNG.standard_normal([BATCH] + g.sample_shape) * spec["scale"]).astype(np.float32)
            np.save(os.path.join(out, "inputs", name + ".npy"), x)
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            values = session.run(g.outputs, {g.input_name: x})
            np.savez(os.path.join(out, "expected", name + ".npz"), **dict(zip(g.outputs, values)))
            listing.append({
                "name": name,
                "case": spec["name"],
                "opset": opset,
                "acceptance": spec["acceptance"],
                "input": g.input_name,
                "outputs": g.outputs,
                "ops": sorted({n.op_type for n in model.graph.node}),
                "approximated": spec["approximated"],
            })
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(listing, f, indent=1)


if __name__ == "__main__":
    main()
