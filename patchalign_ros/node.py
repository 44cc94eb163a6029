"""`python -m patchalign_ros.node`: the perception node (see patchalign_ros.ros.node)."""
import signal
import sys

if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))  # Ctrl-C while loading: exit quietly
    from .ros.node import main

    sys.exit(main())
