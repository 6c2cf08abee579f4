"""A standard Open Inference Protocol v2 client (NVIDIA's tritonclient[http]) against moat serve.

Usage: serve_tritonclient.py HOST:PORT INPUT.f32

INPUT.f32 holds N digits samples (N x 64 little-endian float32). Prints one JSON object with what
the client saw; the Rust test compares it with moat's float executor.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main():
    url, input_path = sys.argv[1], sys.argv[2]
    x = np.fromfile(input_path, dtype="<f4").reshape(-1, 1, 8, 8)
    client = httpclient.InferenceServerClient(url=url)
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("mlp-64"),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata("mlp-64"),
    }

    # The model's own tensor names, as a Triton user reads them from the metadata.
    input_name = out["metadata"]["inputs"][0]["name"]
    output_name = out["metadata"]["outputs"][0]["name"]

    # Binary tensors both ways (the client's default), plus a JSON output and classification
    # (moat's extras `label` and `probabilities`, asked for by name).
    inp = httpclient.InferInput(input_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outputs = [
        httpclient.InferRequestedOutput(output_name),
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", class_count=3),
    ]
    result = client.infer("mlp-64", [inp], outputs=outputs, request_id="tc-1")
    out["response"] = result.get_response()
    out["logits"] = result.as_numpy(output_name).tolist()
    out["labels"] = result.as_numpy("label").tolist()
    out["top3"] = [[s.decode() for s in row] for row in result.as_numpy("probabilities")]

    # JSON tensors, the default outputs (the declared ones).
    inp_json = httpclient.InferInput(input_name, list(x.shape), "FP32")
    inp_json.set_data_from_numpy(x, binary_data=False)
    result_json = client.infer("mlp-64", [inp_json])
    out["default_outputs"] = [o["name"] for o in result_json.get_response()["outputs"]]
    out["logits_json"] = result_json.as_numpy(output_name).tolist()

    # A model-less request through the standard client: the task name as the model, the spec
    # as request parameters.
    task = client.infer("digits", [inp_json], parameters={"min_accuracy": 50.0, "max_latency_ms": 10.0})
    out["task_model_name"] = task.get_response()["model_name"]

    try:
        client.infer("no-such-model", [inp_json])
        out["unknown_model_error"] = None
    except InferenceServerException as e:
        out["unknown_model_error"] = {"status": e.status(), "message": e.message()}

    out["stats"] = client.get_inference_statistics("mlp-64")
    out["index"] = client.get_model_repository_index()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
