"""Could object mode have its own, lower presence operating point? Object mode (the caller gives
one object: ground-truth objects here, up = their table's normal) on every labelled object of the
real captures, "handle" and "lid", sampling seeds 0-4; a threshold chosen on the tune split's
(object, seed) pairs for precision >= 0.9, then both it and the bundled model's own (scene-path)
operating points counted on both splits. Prints the table and writes a JSON report.

Usage: .venv/bin/python tools/object_mode_operating_point.py ../shared/data OUT.json [MODEL]
(MODEL: a registry name or weights path; default: the bundled model)
"""
import json
import sys

import numpy as np
from tqdm import tqdm

from patchalign_ros.evaluation.real_captures import load_captures, table_up
from patchalign_ros.inference.pipeline import PartFinder

QUERIES = {"handle": "handle", "lid": "closure"}
SEEDS = 5


def object_rows(finder, captures) -> list:
    rows = []
    for cap in tqdm(captures, desc="objects", unit="capture"):
        up = table_up(cap)
        if up is None:
            continue
        pts = cap.cloud.reshape(-1, 3)
        finite = np.isfinite(pts).all(axis=1)
        for k, truth in sorted(cap.truth.items()):
            idx = np.flatnonzero((cap.object_id == k) & finite)
            if len(idx) < 150:
                continue
            for q, attr in QUERIES.items():
                if truth[attr] is None:
                    continue
                for seed in range(SEEDS):
                    finder.config.seed = seed
                    obj = finder.find_parts(pts[idx], [q], scene=False, up=up, keypoints=False).objects[0]
                    rows.append({"capture": cap.name, "split": cap.split, "object": int(k), "query": q,
                                 "truth": bool(truth[attr]), "seed": seed, "score": float(obj.presence[q])})
    finder.config.seed = 0
    return rows


def counts(rows, threshold) -> dict:
    tp = sum(r["score"] >= threshold and r["truth"] for r in rows)
    fp = sum(r["score"] >= threshold and not r["truth"] for r in rows)
    positives = sum(r["truth"] for r in rows)
    return {"tp": tp, "fp": fp, "positives": positives, "negatives": len(rows) - positives,
            "precision": round(tp / (tp + fp), 3) if tp + fp else None, "recall": round(tp / max(positives, 1), 3)}


def lowest_precise(rows, target=0.9) -> float:
    for t in sorted({r["score"] for r in rows if r["score"] > 0}):
        if (c := counts(rows, t))["precision"] is not None and c["precision"] >= target:
            return t
    return 0.99


def main(data_root, out_path, checkpoint=None) -> None:
    finder = PartFinder.load(checkpoint, backend="auto")
    rows = object_rows(finder, load_captures(data_root, ("tune", "held-out")))
    report = {"model": checkpoint or "default", "seeds": SEEDS, "queries": {}}
    for q in QUERIES:
        tune = [r for r in rows if r["query"] == q and r["split"] == "tune"]
        held = [r for r in rows if r["query"] == q and r["split"] == "held-out"]
        points = {"bundled (scene path)": finder.presence.threshold_for(q), "object mode, from tune": lowest_precise(tune)}
        entry = {name: {"threshold": round(t, 4), "tune": counts(tune, t), "held-out": counts(held, t)}
                 for name, t in points.items()}
        entry["highest negatives"] = {split: sorted(([r["capture"], r["object"], round(r["score"], 3)]
                                                     for r in part if not r["truth"]), key=lambda x: -x[2])[:5]
                                      for split, part in (("tune", tune), ("held-out", held))}
        report["queries"][q] = entry
        for name, e in entry.items():
            if name != "highest negatives":
                print(f"{q:7s} {name:24s} {e['threshold']:.4f}  tune {e['tune']}  held-out {e['held-out']}")
        print(f"{q:7s} highest negatives {entry['highest negatives']}")
    with open(out_path, "w") as fh:
        json.dump(report, fh, indent=1)
    print(f"report -> {out_path}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
