#!/usr/bin/env python3
"""Validate an ONNX model with `onnx.checker` and run it with onnxruntime.

Usage: onnxruntime_check.py MODEL.onnx INPUT.f32

INPUT.f32 holds a batch of samples as raw little-endian float32, row-major; the batch size is
the file size divided by the per-sample size of the model's (first) input, whose dimensions
after the batch must be concrete. Prints one JSON object to stdout:

    {"batch": B, "output_shape": [B, ...], "outputs": [[...sample 0...], [...], ...]}

Each float32 output is printed as the exact double of its value, so the reader can compare
bit for bit. Exits non-zero (with the reason on stderr) when the checker rejects the model.
Requires: pip install onnxruntime onnx numpy
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model_path, input_path = argv[1], argv[2]
    model = onnx.load(model_path)
    # full_check also runs strict shape inference over the whole graph.
    onnx.checker.check_model(model, full_check=True)

    initializers = {t.name for t in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in initializers)
    dims = graph_input.type.tensor_type.shape.dim
    per_sample = [d.dim_value for d in dims[1:]]
    if any(d <= 0 for d in per_sample):
        raise SystemExit(f"input {graph_input.name} has non-concrete per-sample dims {per_sample}")
    data = np.fromfile(input_path, dtype="<f4")
    size = int(np.prod(per_sample))
    if data.size % size != 0:
        raise SystemExit(f"{data.size} floats are not a whole number of samples of {per_sample}")
    batch = data.size // size
    x = data.reshape([batch] + per_sample)

    options = ort.SessionOptions()
    # Keep the arithmetic as written: no fusions that would reorder float operations.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    (y,) = session.run([model.graph.output[0].name], {graph_input.name: x})
    y = np.asarray(y, dtype=np.float32)
    print(json.dumps({
        "batch": batch,
        "output_shape": list(y.shape),
        "outputs": [[float(v) for v in row.reshape(-1)] for row in y],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
