"""Shared fixtures. Every test session gets its own ROS domain on loopback and its own caches."""
import os
import random
import tempfile

import pytest

# Set before anything can initialise rclpy (and inherited by child processes), so parallel
# runs on one machine never see each other's nodes.
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_CACHE = tempfile.mkdtemp(prefix="patchalign-test-cache-")
os.environ["PATCHALIGN_CACHE_DIR"] = _CACHE


@pytest.fixture(scope="session")
def ros_domain():
    """The isolated ROS domain id of this test session."""
    return int(os.environ["ROS_DOMAIN_ID"])


@pytest.fixture
def rclpy_context(ros_domain):
    """A fresh rclpy context for one test, shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)


@pytest.fixture(scope="session")
def minilm():
    """The real offline MiniLM text encoder (loaded once per session)."""
    from patchalign_ros.text import load_text_encoder

    return load_text_encoder("minilm")
