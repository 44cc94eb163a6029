"""`python -m patchalign_ros.node`: the perception node (see patchalign_ros.ros.node)."""
import sys

from .ros.node import main

if __name__ == "__main__":
    sys.exit(main())
