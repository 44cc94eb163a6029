"""patchalign_ros: find object parts by name in point clouds (PatchAlign3D).

The ML core (``patchalign_ros.model``, ``.text``, ``.inference``, ``.io``) never imports rclpy;
the ROS layer lives in ``patchalign_ros.ros``. The generated interfaces
(``patchalign_ros.msg``, ``patchalign_ros.srv``) are built by CMake and installed next to an
installed copy of this package.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _extend_path_with_installed_interfaces():
    # When this package is imported from a source tree (tests, `python -m` in the repo), the
    # generated msg/srv modules live in the installed copy (the venv's or a colcon install's
    # site-packages). Adding that directory to __path__ lets `patchalign_ros.msg` resolve
    # there while everything else comes from the source tree.
    here = _os.path.realpath(_os.path.dirname(__file__))
    for entry in _sys.path:
        candidate = _os.path.join(entry or _os.getcwd(), __name__)
        if not _os.path.isdir(_os.path.join(candidate, "msg")):
            continue
        real = _os.path.realpath(candidate)
        if real != here and real not in __path__:
            __path__.append(real)


_extend_path_with_installed_interfaces()
