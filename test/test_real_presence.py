"""Counting mistakes on the real development captures (issue #16): the labelled truth, the
tune / held-out split, training negatives cut from the tune split only, the scene stage keeping a
real mug's handle, and `evaluate-presence` with the bundled model. Skipped without ../shared."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# release 4 at its operating point, held-out split, sampling seed 0 (the test's): handle precision
# 1.00 (2 of 2 reported objects), no false "handle" points (release 3 as shipped: 0.67 and 2,529).
# Over five seeds it is 0.69 (models/default.md, "Sampling seeds"). The bounds allow one more
# mistake from float differences between CPUs, not a different model.
HANDLE_PRECISION = 0.66
HANDLE_FALSE_POINTS = 3000
pytestmark = pytest.mark.skipif(not (DATA / "real_scans" / "mosd_learn" / "learn0.pcd").is_file()
                                or not (DATA / "real_scans" / "realsense_6dof" / "red_mug.npy").is_file(),
                                reason="no ../shared/data/real_scans (mosd, mosd_learn, realsense_6dof)")


@pytest.fixture(scope="module")
def captures():
    from patchalign_ros.evaluation.real_captures import load_captures

    return {c.name: c for c in load_captures(DATA)}


def test_captures_truth_and_split(captures):
    held = {n for n, c in captures.items() if c.split == "held-out"}
    tune = {n for n, c in captures.items() if c.split == "tune"}
    assert not held & tune and len(tune) == 50 and len(held) == 21  # test43 is unorganized: skipped
    assert all(n.startswith("learn") or n in ("red_mug", "cylinder", "cheezit", "green_bowl", "white_mug")
               for n in tune)
    t34 = captures["test34"]
    assert t34.truth[6]["handle"] is True and t34.truth[5]["handle"] is None and t34.truth[2]["handle"] is False
    assert t34.part_masks["handle"].sum() > 100 and set(np.unique(t34.object_id[t34.part_masks["handle"]])) == {6}
    # the lug masks are the container's sub-labels other than its body
    lugs = captures["learn39"].part_masks["handle"]
    assert lugs.any() and set(np.unique(captures["learn39"].object_id[lugs])) == {5}
    mug = captures["blue_mug"]
    assert mug.truth == {2: {"handle": True, "closure": False}} and (mug.object_id == 2).sum() > 5000
    # the RealSense object mask is the smoothed object cloud, which sits ~1 cm above the table
    from patchalign_ros.evaluation.real_captures import table_up

    up = table_up(mug)
    assert up is not None and up[1] < -0.5  # optical frame: the table's normal points up the image


def test_training_negatives_come_from_the_tune_split_only():
    from patchalign_ros.data.real_clutter import clutter_samples

    samples = clutter_samples(DATA, 256, views=1, progress=False)
    assert {s.category for s in samples} == {"real mOSD learn", "real RealSense"}
    assert len(samples) > 100
    boxes = [s for s in samples if s.absent and "cap" in s.absent]
    assert boxes and all("handle" in s.absent for s in boxes)
    lugs = [s for s in samples if s.part_names == ["body", "handle"]]
    assert lugs and all((s.labels == 1).mean() < 0.5 for s in lugs)  # the lugs are small parts
    assert sum((s.labels == 1).any() for s in lugs) >= len(lugs) - 1  # (256 points may miss a sliver)
    lids = [s for s in samples if s.part_names == ["body", "lid"]]
    assert len(lids) >= 10 and all(0 < (s.labels == 1).mean() < 0.9 for s in lids)
    assert all(abs(s.points[:, 2].max() - s.points[:, 2].min()) < 0.6 for s in samples)  # gravity aligned


def test_the_red_mug_keeps_its_handle_in_scene_mode(captures):
    """The RealSense red mug's handle reaches down near the table: it used to be an object of its
    own (and then no handle could be found on either piece)."""
    from patchalign_ros.inference.scene import SceneConfig, SceneSegmenter, UpPrior

    cap = captures["red_mug"]
    pts = cap.cloud.reshape(-1, 3)
    valid = np.flatnonzero(np.isfinite(pts).all(axis=1))
    mug = cap.object_id[valid] == 2
    for thin_std, pieces in ((0.006, 1), (0.0, 2)):
        seg = SceneSegmenter(SceneConfig(thin_part_std=thin_std)).segment(pts[valid], prior=UpPrior.from_convention("optical"))
        on_mug = [o for o in seg.objects if mug[o].sum() > 500]
        assert len(on_mug) == pieces, (thin_std, [int(mug[o].sum()) for o in seg.objects])


def test_evaluate_presence_cli_counts_mistakes(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "patchalign_ros", "evaluate-presence", "--data-root", str(DATA),
                           "--out-dir", str(tmp_path), "--queries", "handle,lid"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "default" / "presence_report.json").read_text())
    assert (tmp_path / "default" / "presence_pr.png").stat().st_size > 10_000
    assert report["presence_model"] is not None  # the bundled model's calibration is in use
    held = report["summary"]["held-out"]
    handle = held["handle"]
    assert handle["positives"] == 2 and handle["negatives"] >= 60
    # measured (see models/default.md); bounds leave a little room, not a different model
    assert handle["tp"] >= 1 and handle["precision"] is not None and handle["precision"] >= HANDLE_PRECISION
    assert handle["false_part_points"] <= HANDLE_FALSE_POINTS
    rows = [r for r in report["captures"] if r["capture"] == "test34"]
    assert rows and rows[0]["queries"]["handle"]["iou"][0]["scene_iou"] >= 0.55


def test_lid_masks_are_tops_of_upright_tins_only(tmp_path):
    """The tins lying on a side or standing on an edge (checked by eye in docs/results/lid_masks.png)
    get no lid mask: their top band is a strip of their side."""
    from patchalign_ros.evaluation.real_parts import save_lid_masks_png

    out = save_lid_masks_png(DATA, tmp_path / "lids.png")
    assert {"test35/4", "test37/2", "test37/3", "test37/4", "test38/2", "test38/3", "learn37/2",
            "learn38/4"} <= set(out["rejected"])
    assert {"test31/2", "test33/2", "test42/5", "learn44/3", "learn43/4"} <= set(out["kept"])
    assert len(out["kept"]) == 42 and (tmp_path / "lids.png").stat().st_size > 10_000
