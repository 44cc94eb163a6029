"""The real-geometry side of the data engine: YCB part rules, sensor models, robot-camera views,
and the object-mode real-part evaluation through PartFinder. Tests that need the real YCB
scans or scans in ../shared/data skip without them; the rest run on generated meshes."""
import json
from pathlib import Path

import numpy as np
import pytest

from patchalign_ros.data.engine import generate_samples, robot_depth_sample
from patchalign_ros.data.real_meshes import YCB_RULES, handle_outside_cylinder, label_mesh, load_ycb
from patchalign_ros.data.sensors import SENSORS, SensorModel, apply_sensor, fit_kinect_quantisation
from patchalign_ros.data.shapes import make_shape
from patchalign_ros.data.synthetic import LabeledMesh

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
YCB = SHARED / "meshes" / "ycb"


def _merged(shape: LabeledMesh):
    """One open3d mesh of all parts and the part name per triangle (the ground truth)."""
    import open3d as o3d

    verts, tris, names, offset = [], [], [], 0
    for name, mesh in shape.parts:
        v, t = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
        verts.append(v)
        tris.append(t + offset)
        names += [name] * len(t)
        offset += len(v)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.concatenate(verts)),
                                     o3d.utility.Vector3iVector(np.concatenate(tris)))
    return mesh, np.array(names)


@pytest.mark.parametrize("radius,tube", [(0.035, 0.006), (0.05, 0.009)])
def test_cylinder_handle_rule_finds_a_mug_handle(radius, tube):
    """The rule written for the scanned YCB mug, on a mug whose handle is known: a tapered body
    and a C handle whose roots sit in the wall."""
    from patchalign_ros.data.shapes import ring, shell, tapered

    h, rr = 0.1, 0.03
    shape = LabeledMesh("mug", [("body", tapered(shell(radius, h), h, 0.15)),
                                ("handle", ring(rr, tube, (radius + rr * 0.8, 0, h * 0.55), (0, 1, 0)))])
    mesh, names = _merged(shape)
    v, t = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    area = 0.5 * np.linalg.norm(np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]]), axis=1)
    found = handle_outside_cylinder(v[t].mean(axis=1), t)
    truth = names == "handle"
    assert area[found & truth].sum() / area[found].sum() > 0.99  # never the body
    assert area[found & truth].sum() / area[truth].sum() > 0.35  # the part within the 8 mm margin is missed


def _cylinder_surface(rng, radius, length, n=20000):
    """Points on a closed cylinder along +z from 0 to ``length``: wall and both end discs."""
    wall, ends = int(n * length / (length + radius)), n - int(n * length / (length + radius))
    theta = rng.uniform(0, 2 * np.pi, n)
    r = radius * np.sqrt(rng.uniform(0, 1, ends))
    pts = np.zeros((n, 3))
    pts[:wall] = np.c_[radius * np.cos(theta[:wall]), radius * np.sin(theta[:wall]), rng.uniform(0, length, wall)]
    pts[wall:] = np.c_[r * np.cos(theta[wall:]), r * np.sin(theta[wall:]), rng.choice([0.0, length], ends)]
    return pts


@pytest.mark.parametrize("radius, length", [(0.035, 0.12), (0.10, 0.08)])  # a tall can, a cookie tin
def test_lid_band_is_the_top_of_an_upright_tin_and_nothing_on_a_lying_one(radius, length):
    from patchalign_ros.evaluation.real_captures import LID_MIN_FOOTPRINT, footprint_coverage, lid_band

    rng = np.random.default_rng(1)
    up = np.array([0.0, 0.0, 1.0])
    upright = _cylinder_surface(rng, radius, length)
    lid = lid_band(upright, up)
    assert lid is not None and (upright[lid, 2] >= length - 0.015 - 1e-9).all()
    assert footprint_coverage(upright, lid, up).min() > 0.95
    lying = upright[:, [2, 1, 0]]  # axis along x: on its side, the top band is a strip of its wall
    band = lying[:, 2] >= lying[:, 2].max() - 0.015
    assert footprint_coverage(lying, band, up).min() < LID_MIN_FOOTPRINT
    assert lid_band(lying, up) is None


def test_label_mesh_gives_every_triangle_one_part():
    from patchalign_ros.data.real_meshes import MeshRule

    shape = make_shape("bottle", np.random.default_rng(0))
    mesh, _ = _merged(shape)
    rule = MeshRule("bottle", lambda c, t: {"cap": c[:, 2] > 0.8 * c[:, 2].max()}, "body", "test")
    labelled = label_mesh(mesh, rule)
    assert labelled.part_names == ["body", "cap"] or labelled.part_names == ["cap", "body"]
    assert sum(len(m.triangles) for _, m in labelled.parts) == len(mesh.triangles)


@pytest.mark.skipif(not (YCB / "025_mug.ply").is_file(), reason="no ../shared/data/meshes/ycb")
def test_every_ycb_rule_gives_plausible_parts():
    shapes = load_ycb(YCB)
    assert set(shapes) == set(YCB_RULES)
    for stem, shape in shapes.items():
        areas = {n: m.get_surface_area() for n, m in shape.parts}
        total = sum(areas.values())
        assert len(areas) >= 2, stem
        for name, area in areas.items():  # no rule leaves a sliver or swallows the object
            assert (0.005 if name in ("tip", "spout") else 0.02) < area / total < 0.97, (stem, name, area / total)
    held_out = {"019_pitcher_base", "030_fork", "043_phillips_screwdriver", "044_flat_screwdriver",
                "050_medium_clamp", "051_large_clamp", "052_extra_large_clamp"}
    assert not held_out & set(load_ycb(YCB, training_only=True))  # the held-out real checks
    for stem in ("043_phillips_screwdriver", "044_flat_screwdriver"):  # handle, shaft, tip in that order
        x = {n: np.asarray(m.vertices)[:, 0].mean() for n, m in shapes[stem].parts}
        assert x["handle"] > x["shaft"] > x["tip"], (stem, x)
    mug = dict(shapes["025_mug"].parts)
    handle = np.asarray(mug["handle"].vertices)
    body = np.asarray(mug["body"].vertices)
    assert handle[:, 0].min() > body[:, 0].max() - 0.03  # the handle sits on one side of the body


def test_kinect_model_quantises_like_the_measured_scans():
    rng = np.random.default_rng(0)
    depth = np.full((60, 80), 1.0)
    noisy = apply_sensor(depth, np.ones_like(depth), SENSORS["kinect"], rng)
    values = noisy[np.isfinite(noisy)]
    steps = np.diff(np.unique(np.round(values, 7)))
    assert np.median(steps) == pytest.approx(2.85e-3, rel=0.05)  # 2.85e-3 * z^2 at 1 m
    assert 0.5e-3 < values.std() < 3e-3
    far = apply_sensor(np.full((60, 80), 2.0), np.ones((60, 80)), SENSORS["kinect"], np.random.default_rng(1))
    assert np.nanstd(far) > 2.5 * values.std()  # noise grows with range squared


def test_active_stereo_flies_pixels_across_depth_edges_and_kinect_does_not():
    depth = np.full((50, 50), 1.5)
    depth[:, :25] = 0.8  # a foreground object's edge
    flat = np.ones_like(depth)
    calm = SensorModel("calm", 600.0, 0.0, 1e-5, edge_drop=0.0, flying=0.0)
    assert not np.isnan(apply_sensor(depth, flat, calm, np.random.default_rng(0))).any()
    stereo = apply_sensor(depth, flat, SENSORS["active_stereo"], np.random.default_rng(0))
    between = (stereo > 0.85) & (stereo < 1.45)
    assert between[:, 23:27].sum() >= 10 and between[:, :20].sum() == 0
    kinect = apply_sensor(depth, flat, SENSORS["kinect"], np.random.default_rng(0))
    assert ((kinect > 0.85) & (kinect < 1.45)).sum() <= 3
    assert np.isnan(apply_sensor(np.full((8, 8), np.nan), np.ones((8, 8)), SENSORS["kinect"],
                                 np.random.default_rng(0))).all()


@pytest.mark.skipif(not (SHARED / "real_scans" / "mosd" / "test34.pcd").is_file(), reason="no ../shared real scans")
def test_kinect_parameters_come_from_the_real_scans():
    scans = sorted((SHARED / "real_scans" / "mosd").glob("test3*.pcd"))[:3]
    fit = fit_kinect_quantisation(scans)
    assert fit["quantisation_k"] == pytest.approx(SENSORS["kinect"].quantisation, rel=0.1)
    sigmas = list(fit["table_robust_sigma_m"].values())
    assert sigmas and all(0.8e-3 < s < 3e-3 for s in sigmas)


def test_robot_views_are_partial_noisy_labelled_and_occluded():
    shape = make_shape("mug", np.random.default_rng(4))
    views = [robot_depth_sample(shape, None, np.random.default_rng(s), SENSORS["kinect"]) for s in range(4)]
    views = [v for v in views if v is not None]
    assert views, "a mug on a table is always seen"
    for v in views:
        assert len(v.points) >= 150 and set(np.unique(v.labels)) <= {0, 1, 2}
        assert np.abs(v.points).max() < 0.3  # in the object frame, not the camera's
    sizes = []
    for clutter in (0, 3):
        got = [robot_depth_sample(shape, None, np.random.default_rng(s), SENSORS["kinect"], clutter=clutter,
                                  min_points=1) for s in range(6)]
        sizes.append(sum(0 if g is None else len(g.points) for g in got))
    assert sizes[1] < sizes[0]  # clutter hides some of the object
    fixed = robot_depth_sample(shape, 512, np.random.default_rng(0), SENSORS["passive_stereo"])
    assert fixed is None or fixed.points.shape == (512, 3)


def test_generate_samples_mixes_real_meshes_sensor_views_and_new_shapes():
    mug = make_shape("mug", np.random.default_rng(9))
    real = {"fake_mug": LabeledMesh("mug", mug.parts)}
    samples = list(generate_samples(["power drill", "canister"], 3, 256, seed=3, depth_fraction=1.0,
                                    sensor_fraction=1.0, clutter_fraction=0.5, real_meshes=real, real_views=2,
                                    progress=False))
    assert len(samples) == 3 * 2 + 2
    assert {s.category for s in samples} == {"power drill", "canister", "mug"}
    drills = [s for s in samples if s.category == "power drill"]
    assert all({"handle", "battery", "chuck"} <= set(s.part_names) for s in drills)
    assert all(s.points.shape == (256, 3) for s in samples)


def _tiny_finder(tmp_path):
    from model_factory import random_net

    from patchalign_ros.inference.pipeline import PartFinder
    from patchalign_ros.model import save_network

    ckpt = save_network(random_net(seed=3), tmp_path / "m.safetensors")
    return PartFinder.load(ckpt, text_encoder="minilm", cache_dir=None)


def test_real_parts_runs_the_deployed_path_on_a_data_root(tmp_path, minilm):
    """A data root laid out like ../shared/data, made here: a generated mug saved as the YCB mug."""
    import open3d as o3d

    from patchalign_ros.evaluation.real_parts import format_summary, run_real_parts

    finder = _tiny_finder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no real development data"):
        run_real_parts(finder, tmp_path / "empty", tmp_path / "out0", progress=False)
    (tmp_path / "data" / "meshes" / "ycb").mkdir(parents=True)
    mesh, _ = _merged(make_shape("mug", np.random.default_rng(0)))
    o3d.io.write_triangle_mesh(str(tmp_path / "data" / "meshes" / "ycb" / "025_mug.ply"), mesh)
    report = run_real_parts(finder, tmp_path / "data", tmp_path / "out", ycb_views=2, progress=False)
    assert [c["group"] for c in report["cases"]] == ["mug handle", "mug handle"]
    assert all(0.0 <= c["iou"] <= 1.0 and c["truth_points"] >= 20 for c in report["cases"])
    assert report["summary"]["mug handle"]["cases"] == 2
    assert json.loads((tmp_path / "out" / "real_parts.json").read_text())["summary"] == report["summary"]
    assert (tmp_path / "out" / "real_parts.png").stat().st_size > 5000
    assert "mug handle" in format_summary(report)


@pytest.mark.skipif(not (SHARED / "real_scans" / "milk_cartoon_all_small_clorox.pcd").is_file(),
                    reason="no ../shared real scans")
def test_real_part_masks_land_on_the_right_objects(tmp_path):
    from patchalign_ros.evaluation.real_parts import annotated_bottle_cases, capture_cases, clorox_cases
    from patchalign_ros.inference.pipeline import PartFinder

    finder = PartFinder.load()
    cases = clorox_cases(SHARED / "real_scans" / "milk_cartoon_all_small_clorox.pcd", finder)
    assert {c.name.split(" ", 2)[2] for c in cases} == {"clorox handle", "clorox cap", "detergent handle",
                                                         "detergent cap"}
    for c in cases:
        share = c.truth.mean()
        assert 0.02 < share < 0.25, (c.name, share)  # a part of one object, not a slice of the scene
        # caps are the top of their object along the scene's up
        if c.query == "cap":
            height = c.points @ c.up
            assert np.median(height[c.truth]) > np.percentile(height, 85), c.name
    (mug,) = [c for c in capture_cases(SHARED) if c.name == "test34 handle"]
    assert 100 < mug.truth.sum() < 400 and abs(mug.up @ np.array([0, -1, 0])) > 0.7  # optical frame: up is -y
    bottle = annotated_bottle_cases(SHARED / "annotated_shapes" / "partnet_mobility_bottle_3763")
    lid = next(c for c in bottle if c.query == "lid")
    assert (lid.points[lid.truth] @ lid.up).min() > np.median(lid.points @ lid.up)


@pytest.mark.skipif(not (SHARED / "real_scans" / "realsense_6dof" / "blue_mug.npy").is_file(),
                    reason="no ../shared RealSense frames")
def test_active_stereo_noise_matches_the_real_realsense_frames():
    from patchalign_ros.data.sensors import fit_active_stereo

    fit = fit_active_stereo(sorted((SHARED / "real_scans" / "realsense_6dof").glob("*.npy")))
    assert fit["frames"] == 10
    assert fit["white_sigma_k"] == pytest.approx(SENSORS["active_stereo"].white_sigma, rel=0.2)
    assert fit["depth_step_m"] == pytest.approx(1e-4, rel=0.05)
    assert 0.0 < fit["object_hole_fraction"]["median"] < 0.05 and fit["edge_pixels"] > 500


@pytest.mark.skipif(not (SHARED / "real_scans" / "realsense_6dof" / "blue_mug.npy").is_file(),
                    reason="no ../shared RealSense frames")
def test_realsense_part_masks_follow_the_objects_geometry():
    """Mug handles stick out of the body's cylinder on one side; caps and lids are the top; the
    objects without the part have no mask."""
    from patchalign_ros.evaluation.real_captures import load_captures, table_up

    captures = {c.name: c for c in load_captures(SHARED) if c.source == "RealSense"}
    assert {n for n, c in captures.items() if c.part_masks} == {"blue_mug", "red_mug", "mustard", "pepper", "cylinder"}
    for name, capture in captures.items():
        if not capture.part_masks:
            continue
        ((attr, mask),) = capture.part_masks.items()
        assert attr == ("handle" if name.endswith("mug") else "closure")
        obj = capture.object_id == 2
        assert not (mask & ~obj).any()
        pts = capture.cloud.reshape(-1, 3)
        share = mask.sum() / obj.sum()
        up = table_up(capture)
        height = pts[obj] @ up
        if attr == "handle":
            assert 0.03 < share < 0.2, (name, share)
            axis_free = pts - np.outer(pts @ up, up)  # horizontal offsets from the body's centre
            centre = np.median(axis_free[obj & ~mask], axis=0)
            radial = np.linalg.norm(axis_free - centre, axis=1)
            h_all = pts @ up
            body = obj & ~mask
            outside = [radial[i] > np.quantile(radial[body & (np.abs(h_all - h_all[i]) < 0.005)], 0.9)
                       for i in np.flatnonzero(mask)[::5]]
            assert np.mean(outside) > 0.65, name  # mostly farther out than the body at the same height (the
            # centre here is the visible front arc's median, nearer the camera than the axis)
        else:
            assert 0.05 < share < 0.35, (name, share)
            assert np.median(pts[mask] @ up) > np.quantile(height, 0.8), name


def test_evaluate_parts_refuses_a_missing_data_root(tmp_path, capsys):
    from patchalign_ros.cli import main

    assert main(["evaluate-parts", "--data-root", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["evaluate-parts", "--data-root", str(tmp_path), "--splits", "train"]) == 2


@pytest.mark.skipif(not (SHARED / "real_scans" / "realsense_6dof" / "blue_mug.npy").is_file(),
                    reason="no ../shared RealSense frames")
def test_capture_parts_report_splits_sensors_and_words(tmp_path):
    """The vocabulary check on the held-out captures: each case asked by every word, grouped by
    part, sensor and split; a random-weight model (the numbers are not the point here)."""
    from patchalign_ros.evaluation.real_parts import PART_WORDS, format_capture_parts, run_capture_parts

    report = run_capture_parts({"random": _tiny_finder(tmp_path)}, SHARED, tmp_path / "out", words=True, progress=False)
    summary = report["models"]["random"]["summary"]
    assert {'handle · RealSense · held-out · "grip"', 'closure · Kinect · held-out · "lid"',
            'closure · RealSense · held-out · "cap"'} <= set(summary)
    if (SHARED / "meshes" / "ycb" / "030_fork.ply").is_file():  # the held-out YCB meshes, rendered
        assert {'handle · YCB tools, Kinect model · held-out · "handle"',
                'tip · YCB tools, RealSense model · held-out · "tip"',
                'handle · YCB pitcher, Kinect model · held-out · "grip"'} <= set(summary)
        assert summary['handle · YCB tools, RealSense model · held-out · "handle"']["cases"] == 24
    rows = report["models"]["random"]["cases"]
    assert {r["split"] for r in rows} == {"held-out"} and all(0.0 <= r["iou"] <= 1.0 for r in rows)
    assert {r["case"] for r in rows} >= {"blue_mug handle", "mustard closure", "pepper closure", "test34 handle"}
    for r in rows:
        assert r["word"] in PART_WORDS[r["part"]]
    assert (tmp_path / "out" / "parts_iou.png").stat().st_size > 5000
    assert json.loads((tmp_path / "out" / "parts_report.json").read_text())["splits"] == ["held-out"]
    assert "closure · Kinect · held-out" in format_capture_parts(report)
    # the mistakes beside the hits: every held-out object known to lack a handle or a closure
    # asked for it, a reported part there counted as false with its points
    negatives = [r for r in rows if r["part"].startswith("no ")]
    assert {"no handle", "no closure"} <= {r["part"] for r in negatives}
    assert all(r["truth_points"] == 0 and (r["false_points"] > 0) == r["reported"] for r in negatives)
    no_handle = summary['no handle · Kinect · held-out · "handle"']
    asked = [r for r in negatives if r["group"] == "no handle · Kinect · held-out" and r["word"] == "handle"]
    assert no_handle["cases"] == len(asked) >= 20
    assert no_handle["false_reports"] == sum(r["reported"] for r in asked)


def test_false_parts_of_a_part_less_group():
    """Objects known to lack the part: false reports and false points per seed, means over the
    seeds and their range; printed as "false N/M"."""
    from patchalign_ros.evaluation.real_parts import _summarize_group, format_capture_parts

    row = lambda reported, points: {"reported": reported, "false_points": points, "iou": 0.0 if reported else 1.0}
    two = _summarize_group("no handle · Kinect · held-out", {0: [row(True, 40), row(False, 0), row(False, 0)],
                                                             1: [row(True, 10), row(True, 30), row(False, 0)]})
    assert two == {"cases": 3, "false_reports": 1.5, "false_points": 40.0, "seeds": 2,
                   "false_reports_per_seed": [1, 2], "false_reports_range": [1, 2]}
    iou = _summarize_group("handle · Kinect · held-out", {0: [row(False, 0), row(True, 5)]})
    assert iou == {"cases": 2, "mean_iou": 0.5, "found": 1}
    report = {"seeds": 2, "splits": ["held-out"], "models": {"m": {"summary": {"no handle · Kinect · held-out": two}}}}
    assert "false 1.5/3 [1-2]" in format_capture_parts(report)


def test_seed_means_and_ranges_of_a_group():
    """Several sampling seeds: a group's mean IoU and found count are the seeds' means, with the
    per-seed means and their range beside them; one seed keeps the plain numbers."""
    from patchalign_ros.evaluation.real_parts import _group_summary, format_capture_parts

    two = _group_summary({0: [0.0, 1.0, 0.5], 1: [1.0, 1.0, 0.5]})
    assert two["cases"] == 3 and two["mean_iou"] == pytest.approx(0.667, abs=1e-3) and two["found"] == 2.5
    assert two["mean_iou_per_seed"] == [0.5, 0.833] and two["mean_iou_range"] == [0.5, 0.833]
    one = _group_summary({0: [0.0, 1.0]})
    assert one == {"cases": 2, "mean_iou": 0.5, "found": 1}
    report = {"seeds": 2, "splits": ["held-out"], "models": {"m": {"summary": {"handle · Kinect · held-out": two}}}}
    assert "0.667 [0.50-0.83] (2.5/3)" in format_capture_parts(report)


@pytest.mark.skipif(not (SHARED / "real_scans" / "realsense_6dof" / "blue_mug.npy").is_file(),
                    reason="no ../shared RealSense frames")
def test_capture_parts_over_sampling_seeds(tmp_path):
    from patchalign_ros.evaluation.real_parts import run_capture_parts

    finder = _tiny_finder(tmp_path)
    finder.config.seed = 7
    report = run_capture_parts({"random": finder}, SHARED, tmp_path / "out", progress=False, seeds=2)
    assert finder.config.seed == 7  # left as it was
    rows = report["models"]["random"]["cases"]
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case"], set()).add(r["seed"])
    assert by_case and all(s == {0, 1} for s in by_case.values())
    summary = report["models"]["random"]["summary"]["handle · RealSense · held-out"]
    assert summary["seeds"] == 2 and len(summary["mean_iou_per_seed"]) == 2 and report["seeds"] == 2


def test_evaluate_parts_refuses_no_seeds(tmp_path, capsys):
    from patchalign_ros.cli import main

    assert main(["evaluate-parts", "--data-root", str(tmp_path), "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_calibration_refuses_no_seeds(tmp_path, capsys):
    from patchalign_ros.cli import main
    from patchalign_ros.evaluation.presence import calibrate

    with pytest.raises(ValueError, match="seeds"):
        calibrate(None, tmp_path, tmp_path / "cal.json", seeds=0)
    assert main(["calibrate-presence", "--data-root", str(tmp_path), "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err and not (tmp_path / "cal.json").exists()


@pytest.mark.skipif(not (SHARED / "real_scans" / "mosd_learn" / "learn0.pcd").is_file(),
                    reason="no ../shared mOSD learn scans (the tune split)")
def test_calibration_thresholds_over_sampling_seeds(tmp_path):
    from patchalign_ros.evaluation.presence import calibrate

    finder = _tiny_finder(tmp_path)
    finder.config.seed = 3
    out = calibrate(finder, SHARED, tmp_path / "cal.json", ["handle"], generated_per_category=1, progress=False,
                    seeds=2)
    assert out["seeds"] == 2 and "over 2 sampling seeds" in out["presence"]["note"]
    assert finder.config.seed == 3 and json.loads((tmp_path / "cal.json").read_text())["seeds"] == 2


@pytest.mark.skipif(not (SHARED / "real_scans" / "realsense_6dof" / "blue_mug.npy").is_file(),
                    reason="no ../shared RealSense frames")
def test_presence_counts_over_sampling_seeds(tmp_path):
    """Two seeds: every capture twice, counts over (object, seed) pairs, the finder's seed kept."""
    from patchalign_ros.evaluation.presence import run_presence_evaluation

    finder = _tiny_finder(tmp_path)
    one = run_presence_evaluation(finder, SHARED, tmp_path / "one", ["handle"], ("held-out",), object_mode=False,
                                  progress=False)
    two = run_presence_evaluation(finder, SHARED, tmp_path / "two", ["handle"], ("held-out",), object_mode=False,
                                  progress=False, seeds=2)
    assert finder.config.seed == 0 and two["seeds"] == 2 and one["seeds"] == 1
    assert len(two["captures"]) == 2 * len(one["captures"]) and {r["seed"] for r in two["captures"]} == {0, 1}
    c1, c2 = one["summary"]["held-out"]["handle"], two["summary"]["held-out"]["handle"]
    assert c2["positives"] == 2 * c1["positives"] and c2["tp"] + c2["fn"] == c2["positives"]
    with pytest.raises(ValueError, match="seeds"):
        run_presence_evaluation(finder, SHARED, tmp_path / "x", ["handle"], ("held-out",), seeds=0)
