"""Print a lock file (name==version for every installed distribution) of the current venv.

Usage, after `pip install -r requirements.in` into a fresh venv:
    .venv/bin/python tools/lock_requirements.py > requirements.lock
Only wheel metadata (.dist-info) counts: the ROS wheels also carry egg-info metadata under
their ROS package names (e.g. `action_msgs`), which PyPI does not know.
"""
import importlib.metadata as metadata

HEADER = """# Every Python package patchalign_ros installs, pinned: the whole closure of requirements.in
# (tools/setup_venv.sh installs it with --no-deps). Regenerate: see README, 'Updating dependencies'."""


def main() -> None:
    pins = {}
    for dist in metadata.distributions():
        if not str(getattr(dist, "_path", "")).endswith(".dist-info"):
            continue
        name = dist.metadata["Name"]
        if name.lower() != "pip":
            pins[name.lower()] = f"{name}=={dist.version}"
    print(HEADER)
    print("\n".join(sorted(pins.values(), key=str.lower)))


if __name__ == "__main__":
    main()
