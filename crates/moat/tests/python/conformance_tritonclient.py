"""The conformance models through NVIDIA's tritonclient[http], as a Triton user calls them.

Usage: conformance_tritonclient.py HOST:PORT CASES_DIR

CASES_DIR is what conformance_graphs.py wrote. For every model, the input and output names are
read from the ONNX file itself (not from moat); the batch of inputs goes as a binary tensor and
every declared output is asked for by its name. Prints one JSON object: per model, the metadata
moat declared and the largest absolute difference of each output from onnxruntime's, and the
answer to an unknown output name.
"""

import json
import os
import sys

import numpy as np
import onnx
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def onnx_names(path):
    model = onnx.load(path)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs[0], [o.name for o in model.graph.output]


def main():
    url, root = sys.argv[1], sys.argv[2]
    client = httpclient.InferenceServerClient(url=url)
    with open(os.path.join(root, "cases.json")) as f:
        cases = json.load(f)
    report = {}
    for case in cases:
        name = case["name"]
        input_name, output_names = onnx_names(os.path.join(root, "repo", name, "1", "model.onnx"))
        x = np.load(os.path.join(root, "inputs", name + ".npy"))
        expected = np.load(os.path.join(root, "expected", name + ".npz"))
        inp = httpclient.InferInput(input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        outputs = [httpclient.InferRequestedOutput(o) for o in output_names]
        result = client.infer(name, [inp], outputs=outputs)
        diffs = {}
        for o in output_names:
            got = result.as_numpy(o)
            want = expected[o]
            diffs[o] = float(np.abs(got - want).max()) if got.shape == want.shape else None
            diffs[o + ":bit_exact"] = bool(got.shape == want.shape and np.array_equal(got, want))
        meta = client.get_model_metadata(name)
        # The declared shapes, batch as -1, against onnxruntime's answers.
        declared = {o["name"]: [int(d) for d in o["shape"]] for o in meta["outputs"]}
        shapes = {o: [-1] + list(expected[o].shape[1:]) for o in output_names}
        report[name] = {
            "diffs": diffs,
            "metadata_shapes": declared,
            "onnx_shapes": shapes,
            "metadata_inputs": [i["name"] for i in meta["inputs"]],
            "metadata_outputs": [o["name"] for o in meta["outputs"]],
            "onnx_input": input_name,
            "onnx_outputs": output_names,
        }
    first = cases[0]["name"]
    x = np.load(os.path.join(root, "inputs", first + ".npy"))
    inp = httpclient.InferInput(onnx_names(os.path.join(root, "repo", first, "1", "model.onnx"))[0], list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        client.infer(first, [inp], outputs=[httpclient.InferRequestedOutput("no_such_output")])
        report["unknown_output_error"] = None
    except InferenceServerException as e:
        report["unknown_output_error"] = {"status": e.status(), "message": e.message()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
