"""Recomputes membership-inference metrics from `moat attack mia`'s exported scores with
scikit-learn, independently of moat: for every scores/*.csv under the directory given, the AUC
(roc_auc_score) and the TPR at FPR <= 1 %, 0.1 % and 0 % (the largest TPR among roc_curve's
points with drop_intermediate=False under each bound). Prints one JSON object keyed by file
stem (`<output>-<attack>`)."""

import csv
import json
import pathlib
import sys

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def metrics(path):
    member, score = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            member.append(int(row["member"]))
            score.append(float(row["score"]))
    y, s = np.array(member), np.array(score, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)

    def tpr_at(bound):
        return float(tpr[fpr <= bound].max())

    return {
        "auc": float(roc_auc_score(y, s)),
        "tpr_at_1pct_fpr": tpr_at(0.01),
        "tpr_at_0_1pct_fpr": tpr_at(0.001),
        "tpr_at_0_fpr": tpr_at(0.0),
        "samples": int(len(y)),
    }


def main():
    root = pathlib.Path(sys.argv[1])
    out = {p.stem: metrics(p) for p in sorted((root / "scores").glob("*.csv"))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
