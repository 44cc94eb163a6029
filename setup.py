"""pip install of the ROS-free Python core (model, text encoders, inference, CLI).

The ROS interfaces (msg/srv) and the node are built by CMake (`make setup`, or
`colcon build` in a ROS 2 workspace); this file only makes the core importable with pip.
"""
from setuptools import find_packages, setup

setup(
    name="patchalign_ros",
    version="0.1.0",
    description="Find object parts by name in point clouds (PatchAlign3D) - ROS-free core",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["patchalign_ros", "patchalign_ros.*"]),
    package_data={"patchalign_ros": ["py.typed"]},
    install_requires=[
        "numpy>=1.26",
        "scipy>=1.11",
        "torch>=2.3",
        "safetensors>=0.4",
        "tqdm>=4.66",
        "pyyaml>=6",
        "matplotlib>=3.8",
    ],
    extras_require={
        "scene": ["open3d>=0.18"],
        "text": ["sentence-transformers>=3", "open_clip_torch>=2.24"],
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],
        "bags": ["rosbags>=0.10"],
    },
    entry_points={"console_scripts": ["patchalign=patchalign_ros.cli:main"]},
)
