#!/usr/bin/env bash
# Creates .venv (Python 3.11) with everything patchalign_ros needs, from PyPI and Debian only.
#   tools/setup_venv.sh deps        system packages, venv, pinned Python packages, CMake fix
#   tools/setup_venv.sh interfaces  builds msg/srv + Python package and installs them into .venv
# The Makefile calls these behind stamps, so `make setup` is fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
step=${1:-all}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

find_python() {
  for candidate in "${PYTHON:-}" python3.11 /usr/bin/python3.11; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required (the ROS 2 Kilted wheels are cp311); set PYTHON=..." >&2
  return 1
}

ensure_system_packages() {
  # open3d dlopens libusb; cmake and a C compiler build the interfaces.
  local missing=()
  ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

fix_ros_wheel_cmake_paths() {
  # The ROS wheels were built under manylinux and hard-code its Python/numpy include dirs
  # in their CMake exports; point them at this interpreter's.
  local py_inc np_inc
  py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  local files
  files=$(grep -rlE '/opt/python/cp311-cp311' "$VENV"/share/*/cmake 2>/dev/null || true)
  [ -n "$files" ] || return 0
  log "fixing manylinux include paths in $(echo "$files" | wc -l) CMake files"
  # numpy's include first: it lies under the same manylinux prefix.
  echo "$files" | xargs sed -i -E \
    -e "s#/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/(_core|core)/include#${np_inc}#g" \
    -e "s#/opt/python/cp311-cp311/include/python3\.11#${py_inc}#g"
}

deps() {
  ensure_system_packages
  local python
  python=$(find_python)
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $python"
    "$python" -m venv "$VENV"
  fi
  # A colcon workspace that holds this repo must not crawl the venv's share/*/package.xml.
  touch "$VENV/COLCON_IGNORE"
  log "installing pinned Python packages (requirements.lock)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip==26.3"
  # --no-deps: the lock file lists the whole closure, so nothing unpinned sneaks in.
  # (this machine's pip config names local indexes that may be absent: hide those warnings)
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  fix_ros_wheel_cmake_paths
  "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
}

interfaces() {
  local build=$VENV/.build/patchalign_ros
  log "building interfaces and installing patchalign_ros into $VENV"
  mkdir -p "$build"
  # The generators find their type supports through the ament index of the venv.
  export AMENT_PREFIX_PATH=$VENV
  export PATH=$VENV/bin:$PATH
  export VIRTUAL_ENV=$VENV
  cmake -S "$ROOT" -B "$build" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log"; exit 1; }
  cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
  cmake --install "$build" >"$build/install.log" 2>&1 || { cat "$build/install.log"; exit 1; }
  # Python caches of the installed copy are stale after a reinstall.
  find "$VENV/lib/python3.11/site-packages/patchalign_ros" -name __pycache__ -prune -exec rm -rf {} + || true
  log "checking: from patchalign_ros.msg import PartSegmentArray; from patchalign_ros.srv import QueryParts; import rclpy"
  (cd / && "$VENV/bin/python" -c \
    "from patchalign_ros.msg import PartSegmentArray; from patchalign_ros.srv import QueryParts; import rclpy")
}

case "$step" in
  deps) deps ;;
  interfaces) interfaces ;;
  all) deps; interfaces ;;
  *) echo "usage: $0 [deps|interfaces|all]" >&2; exit 2 ;;
esac
