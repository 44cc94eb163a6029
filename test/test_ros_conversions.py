"""PointCloud2 <-> numpy (vectorised, validated) and results -> PartSegmentArray."""
import copy

import numpy as np
import pytest

pytest.importorskip("sensor_msgs")
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from patchalign_ros.ros.conversions import (FLOAT32, FLOAT64, UINT8, CloudFormatError, cloud_to_xyz,  # noqa: E402
                                            result_to_msg, xyz_to_cloud)


def custom_cloud(points, dtype_xyz="<f4", big_endian=False, pad=0, order=("z", "rgb", "x", "y"), height=1):
    """A cloud with fields in an unusual order, an rgb field and trailing padding."""
    e = ">" if big_endian else "<"
    fmt = e + dtype_xyz[1:]
    names = list(order)
    formats = [fmt if n in "xyz" else e + "u4" for n in names]
    base = np.dtype({"names": names, "formats": formats})
    dt = np.dtype({"names": names, "formats": formats, "offsets": [base.fields[n][1] for n in names],
                   "itemsize": base.itemsize + pad})
    flat = points.reshape(-1, 3)
    rec = np.zeros(len(flat), dtype=dt)
    rec["x"], rec["y"], rec["z"] = flat[:, 0], flat[:, 1], flat[:, 2]
    rec["rgb"] = 0x00FF8800
    msg = PointCloud2(height=height, width=len(flat) // height, is_bigendian=big_endian, point_step=dt.itemsize)
    msg.row_step = msg.point_step * msg.width
    size = 8 if dtype_xyz.endswith("8") else 4
    msg.fields = [PointField(name=n, offset=dt.fields[n][1], count=1,
                             datatype=(FLOAT64 if size == 8 else FLOAT32) if n in "xyz" else 6) for n in names]
    msg.data = rec.tobytes()
    return msg


def test_round_trip_organized_with_nans():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(48, 64, 3)).astype(np.float32)
    pts[rng.random((48, 64)) < 0.2] = np.nan
    msg = xyz_to_cloud(pts, extra_fields={"label": np.arange(48 * 64, dtype=np.uint32)})
    assert msg.height == 48 and msg.width == 64 and not msg.is_dense
    back = cloud_to_xyz(msg)
    assert back.shape == (48, 64, 3)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(pts))
    np.testing.assert_allclose(np.nan_to_num(back), np.nan_to_num(pts))


@pytest.mark.parametrize("dtype_xyz, big_endian, pad", [("<f4", False, 0), ("<f8", False, 4), ("<f4", True, 8),
                                                         ("<f8", True, 0)])
def test_any_field_order_precision_endianness_padding(dtype_xyz, big_endian, pad):
    pts = np.random.default_rng(1).normal(size=(500, 3))
    msg = custom_cloud(pts, dtype_xyz, big_endian, pad)
    np.testing.assert_allclose(cloud_to_xyz(msg), pts, rtol=1e-6 if dtype_xyz.endswith("4") else 0)


def test_row_padding_is_skipped():
    pts = np.random.default_rng(2).normal(size=(4, 10, 3)).astype(np.float32)
    msg = xyz_to_cloud(pts)
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(4, -1)
    msg.data = np.concatenate([rows, np.full((4, 16), 0xAB, np.uint8)], axis=1).tobytes()
    msg.row_step += 16
    np.testing.assert_allclose(cloud_to_xyz(msg), pts)


def malformed(kind):
    msg = xyz_to_cloud(np.random.default_rng(3).normal(size=(100, 3)))
    if kind == "missing_z":
        msg.fields = [f for f in msg.fields if f.name != "z"]
    elif kind == "unknown_datatype":
        msg.fields[1].datatype = 42
    elif kind == "integer_xyz":
        msg.fields[0].datatype = UINT8
    elif kind == "overlap":
        msg.fields[1].offset = 2
    elif kind == "out_of_range":
        msg.fields[2].offset = msg.point_step
    elif kind == "short_data":
        msg.data = bytes(msg.data)[:-1]
    elif kind == "long_data":
        msg.data = bytes(msg.data) + b"\x00" * 12
    elif kind == "point_step_0":
        msg.point_step = 0
    elif kind == "width_0":
        msg.width = 0
    elif kind == "height_0":
        msg.height = 0
    elif kind == "huge":
        msg.width, msg.height = 5000, 2000
    elif kind == "duplicate_x":
        msg.fields = list(msg.fields) + [copy.deepcopy(msg.fields[0])]
    elif kind == "row_step_short":
        msg.row_step = msg.point_step * msg.width - 1
    return msg


@pytest.mark.parametrize("kind, reason", [
    ("missing_z", "missing field"), ("unknown_datatype", "unknown datatype"), ("integer_xyz", "float32 or float64"),
    ("overlap", "overlap"), ("out_of_range", "outside point_step"), ("short_data", r"expected row_step\*height"),
    ("long_data", r"expected row_step\*height"), ("point_step_0", "point_step is 0"), ("width_0", "empty cloud"),
    ("height_0", "empty cloud"), ("huge", "exceed the limit"), ("duplicate_x", "twice"),
    ("row_step_short", "row_step"),
])
def test_malformed_clouds_are_rejected_with_a_reason(kind, reason):
    with pytest.raises(CloudFormatError, match=reason):
        cloud_to_xyz(malformed(kind))


def test_seeded_mutation_fuzz_never_escapes_cloud_format_error():
    """5,000 random corruptions of header fields and buffers: each either parses to finite-shaped
    output or raises CloudFormatError - never another exception, never an out-of-bounds read."""
    rng = np.random.default_rng(1234)
    base = xyz_to_cloud(rng.normal(size=(6, 7, 3)).astype(np.float32), extra_fields={"i": np.zeros(42, np.float32)})
    parsed = rejected = 0
    for _ in range(5000):
        msg = copy.deepcopy(base)
        for _ in range(rng.integers(1, 4)):
            what = rng.integers(0, 9)
            if what == 0:
                msg.width = int(rng.integers(0, 20))
            elif what == 1:
                msg.height = int(rng.integers(0, 20))
            elif what == 2:
                msg.point_step = int(rng.integers(0, 40))
            elif what == 3:
                msg.row_step = int(rng.integers(0, 400))
            elif what == 4:
                f = msg.fields[int(rng.integers(len(msg.fields)))]
                f.offset = int(rng.integers(0, 40))
            elif what == 5:
                f = msg.fields[int(rng.integers(len(msg.fields)))]
                f.datatype = int(rng.integers(0, 12))
            elif what == 6:
                data = bytes(msg.data)
                cut = int(rng.integers(0, len(data) + 1))
                msg.data = data[:cut] if rng.random() < 0.5 else data + bytes(cut % 50)
            elif what == 7:
                msg.is_bigendian = not msg.is_bigendian
            else:
                f = msg.fields[int(rng.integers(len(msg.fields)))]
                f.name = ["x", "y", "z", "w", ""][int(rng.integers(5))]
        try:
            xyz = cloud_to_xyz(msg)
        except CloudFormatError:
            rejected += 1
            continue
        assert xyz.shape[-1] == 3 and xyz.size == 3 * msg.width * msg.height
        parsed += 1
    assert parsed > 100 and rejected > 1000  # the mutator exercised both outcomes


def test_result_to_msg(minilm, tmp_path):
    from model_factory import random_net
    from patchalign_ros.inference.pipeline import InferenceConfig, PartFinder
    from patchalign_ros.model import PatchAlignModel
    from patchalign_ros.text import PromptEmbedder

    finder = PartFinder(PatchAlignModel(random_net(seed=2)), PromptEmbedder(minilm, cache_dir=tmp_path),
                        InferenceConfig(part_min_mean_score=0.0, min_part_fraction=0.0, max_part_fraction=1.0))
    pts = np.random.default_rng(4).normal(size=(30, 40, 3))
    pts[0] = np.nan
    result = finder.find_parts(pts, ["handle", "lid"], min_score=0.3)
    msg = result_to_msg(result, xyz_to_cloud(pts).header)
    assert msg.queries == ["handle", "lid"] and msg.num_input_points == 1200 and msg.num_valid_points == 1160
    assert len(msg.segments) == sum(len(o.parts) for o in result.objects) > 0
    for seg, part in zip(msg.segments, result.objects[0].parts):
        assert list(seg.point_indices) == part.point_indices.tolist()
        assert min(seg.point_indices) >= 40  # row 0 is NaN: never labelled
        q = seg.box_pose.orientation
        assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1) < 1e-6
    assert msg.total_ms > 0 and len(msg.keypoints) == sum(len(o.keypoints) for o in result.objects)
