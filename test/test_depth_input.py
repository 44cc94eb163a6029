"""Issue #18: depth images and camera models in, as depth_image_proc reads them; results moved
into another frame; the CLI's depth route and its picture. No ROS graph needed here (the node's
depth route runs through `ros2 launch` in test_launch_depth.py)."""
import json

import numpy as np
import pytest

from patchalign_ros.depth_image import (CameraIntrinsics, DepthFormatError, deproject, depth_to_metres, load_depth,
                                        load_intrinsics)

K = CameraIntrinsics(500.0, 510.0, 3.5, 2.0, 8, 5)


def _depth_mm():
    d = np.full((5, 8), 1000, dtype=np.uint16)
    d[1, 2] = 0  # no reading
    d[3, 6] = 2500
    return d


def test_deprojection_matches_the_pinhole_model_pixel_for_pixel():
    pts = deproject(_depth_mm(), K)
    assert pts.shape == (5, 8, 3)
    assert np.isnan(pts[1, 2]).all()
    v, u = 3, 6
    assert np.allclose(pts[v, u], [(u - 3.5) * 2.5 / 500.0, (v - 2.0) * 2.5 / 510.0, 2.5])
    flat = pts.reshape(-1, 3)  # indices number pixels row-major, as organized clouds do
    assert np.allclose(flat[v * 8 + u], pts[v, u])
    metres = deproject(_depth_mm().astype(np.float32) / 1000.0, K)  # 32FC1: metres, 0 -> NaN
    assert np.allclose(metres, pts, equal_nan=True)
    floats = np.array([[np.nan, np.inf, -1.0, 0.5]], dtype=np.float32)
    assert np.isnan(depth_to_metres(floats)[0, :3]).all() and depth_to_metres(floats)[0, 3] == 0.5


@pytest.mark.parametrize("depth, kwargs, message", [
    (np.zeros((4, 4, 3), np.uint16), {}, "one channel"),
    (np.zeros((0, 4), np.uint16), {}, "empty"),
    (np.zeros((4, 4), np.complex64), {}, "integer or float"),
    (np.zeros((4, 4), np.uint16), {"encoding": "yuv422"}, "unknown depth encoding"),
    (np.zeros((4, 4), np.uint16), {"depth_scale": -1.0}, "depth_scale"),
])
def test_bad_depth_images_are_refused_with_the_reason(depth, kwargs, message):
    with pytest.raises(DepthFormatError, match=message):
        depth_to_metres(depth, **kwargs)


def test_camera_models_are_checked():
    with pytest.raises(DepthFormatError, match="not calibrated"):
        CameraIntrinsics.from_k([0.0] * 9)
    with pytest.raises(DepthFormatError, match="finite"):
        CameraIntrinsics(float("nan"), 1.0, 0.0, 0.0)
    with pytest.raises(DepthFormatError, match="9 values"):
        CameraIntrinsics.from_k([1.0, 2.0])
    with pytest.raises(DepthFormatError, match="different stream"):
        deproject(np.ones((6, 8), np.uint16), K)


def test_intrinsics_and_depth_files(tmp_path):
    from PIL import Image

    assert load_intrinsics("500,510,3.5,2") == CameraIntrinsics(500.0, 510.0, 3.5, 2.0)
    calib = tmp_path / "camera.yaml"  # camera_calibration's format
    calib.write_text("image_width: 8\nimage_height: 5\ncamera_matrix:\n  rows: 3\n  cols: 3\n"
                     "  data: [500.0, 0.0, 3.5, 0.0, 510.0, 2.0, 0.0, 0.0, 1.0]\n")
    assert load_intrinsics(str(calib)) == K
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"k": K.k.reshape(-1).tolist(), "width": 8, "height": 5}))
    assert load_intrinsics(str(info)) == K
    with pytest.raises(DepthFormatError, match="fx,fy,cx,cy"):
        load_intrinsics("500,510")
    png = tmp_path / "depth.png"
    Image.fromarray(_depth_mm()).save(png)
    assert np.array_equal(load_depth(png), _depth_mm())
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((5, 8, 3), np.uint8)).save(rgb)
    with pytest.raises(DepthFormatError, match="not a one-channel depth image"):
        load_depth(rgb)
    with pytest.raises(FileNotFoundError):
        load_depth(tmp_path / "missing.png")


def test_image_messages_round_trip_and_bad_ones_are_refused():
    from sensor_msgs.msg import Image

    from patchalign_ros.ros.image_msgs import (camera_info_to_intrinsics, depth_to_image_msg, image_to_depth,
                                                image_to_rgb, intrinsics_to_camera_info)

    depth = depth_to_metres(_depth_mm())
    mm = depth_to_image_msg(depth)
    assert mm.encoding == "16UC1" and len(mm.data) == 5 * 8 * 2
    assert np.allclose(image_to_depth(mm), depth, equal_nan=True)
    metres = depth_to_image_msg(depth, millimetres=False)
    assert metres.encoding == "32FC1" and np.allclose(image_to_depth(metres), depth, equal_nan=True)
    big = depth_to_image_msg(depth)  # the same image, big endian
    big.is_bigendian = 1
    big.data = _depth_mm().astype(">u2").tobytes()
    assert np.allclose(image_to_depth(big), depth, equal_nan=True)
    signed = Image(height=5, width=8, encoding="16SC1", step=16, data=(_depth_mm() // 10).astype("<i2").tobytes())
    with pytest.raises(DepthFormatError, match="depth_scale"):
        image_to_depth(signed)
    assert np.nanmax(image_to_depth(signed, depth_scale=0.01)) == pytest.approx(2.5)
    with pytest.raises(DepthFormatError, match="not supported"):
        image_to_depth(Image(height=5, width=8, encoding="rgb8", step=24, data=bytes(120)))
    short = depth_to_image_msg(depth)
    short.data = bytes(10)
    with pytest.raises(DepthFormatError, match="expected step"):
        image_to_depth(short)
    narrow = depth_to_image_msg(depth)
    narrow.step = 4
    with pytest.raises(DepthFormatError, match="shorter"):
        image_to_depth(narrow)
    bgr = Image(height=1, width=2, encoding="bgr8", step=6, data=bytes([1, 2, 3, 4, 5, 6]))
    assert image_to_rgb(bgr).tolist() == [[[3, 2, 1], [6, 5, 4]]]
    info = intrinsics_to_camera_info(K, 8, 5)
    assert camera_info_to_intrinsics(info) == K
    info.k = [0.0] * 9
    with pytest.raises(DepthFormatError, match="not calibrated"):
        camera_info_to_intrinsics(info)


def test_results_move_into_the_target_frame():
    from patchalign_ros.msg import PartKeypoint, PartSegment, PartSegmentArray
    from patchalign_ros.ros.transforms import matrix_quaternion, quaternion_matrix, transform_segments

    rng = np.random.default_rng(0)
    for _ in range(20):  # quaternion <-> matrix round trip, every branch of Shepperd's method
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        back = matrix_quaternion(quaternion_matrix(q))
        assert np.allclose(back, q) or np.allclose(back, -q)
    a = np.radians(90)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    t = np.array([1.0, 2.0, 3.0])
    msg = PartSegmentArray()
    msg.header.frame_id = msg.cloud_frame_id = "camera_optical_frame"
    seg = PartSegment(label="handle")
    seg.centroid.x, seg.approach.x = 1.0, 1.0
    seg.box_pose.position.x, seg.box_pose.orientation.w = 1.0, 1.0
    msg.segments.append(seg)
    kp = PartKeypoint(label="handle")
    kp.position.y, kp.normal.z = 1.0, 1.0
    msg.keypoints.append(kp)
    transform_segments(msg, rot, t, "base_link")
    assert msg.header.frame_id == "base_link" and msg.cloud_frame_id == "camera_optical_frame"
    s = msg.segments[0]
    assert np.allclose([s.centroid.x, s.centroid.y, s.centroid.z], [1.0, 3.0, 3.0])
    assert np.allclose([s.approach.x, s.approach.y, s.approach.z], [0.0, 1.0, 0.0])  # a direction: no translation
    o = s.box_pose.orientation
    assert np.allclose(quaternion_matrix((o.x, o.y, o.z, o.w)), rot)
    k = msg.keypoints[0]
    assert np.allclose([k.position.x, k.position.y, k.position.z], [0.0, 2.0, 3.0])
    assert np.allclose([k.normal.x, k.normal.y, k.normal.z], [0.0, 0.0, 1.0])


def test_segment_takes_a_depth_image_and_paints_the_camera_view(tmp_path):
    from PIL import Image

    from model_factory import random_net
    from patchalign_ros.data.synthetic import tabletop_scene
    from patchalign_ros.model import save_network
    from test_cli import run_cli

    capture = tabletop_scene(np.random.default_rng(0), width=320, height=240)
    depth = np.where(np.isfinite(capture.points[..., 2]), np.round(capture.points[..., 2] * 1000), 0).astype(np.uint16)
    Image.fromarray(depth).save(tmp_path / "depth.png")
    fx = 525.0 * 320 / 640
    ckpt = save_network(random_net(seed=8), tmp_path / "tiny.safetensors")
    out, png = tmp_path / "r.json", tmp_path / "v.png"
    proc = run_cli("segment", "--depth", tmp_path / "depth.png", "--intrinsics", f"{fx},{fx},159.5,119.5",
                   "--queries", "handle", "--checkpoint", ckpt, "--out", out, "--png", png)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "scene" and result["num_points"] == 320 * 240 and result["objects"]
    with Image.open(png) as img:
        assert img.size[0] == 3 * img.size[1], "camera image beside the two 3D views"
    for args, message in ((["--depth", tmp_path / "depth.png"], "--intrinsics"),
                          ([], "one of them"),
                          (["--depth", tmp_path / "depth.png", "--intrinsics", "0,0,0,0"], "not calibrated")):
        proc = run_cli("segment", *args, "--queries", "handle", "--checkpoint", ckpt, "--out", tmp_path / "x.json")
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
