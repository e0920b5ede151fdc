#!/usr/bin/env bash
# colcon build + colcon test + colcon test-result, with ROS kept off the network.
# Exits non-zero when anything fails. Extra arguments go to pytest (e.g. -k scheduling).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .venv/bin/activate
export AMENT_PREFIX_PATH="$VIRTUAL_ENV"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}"
export ROS_LOG_DIR="$PWD/build/ros_log"
export PYTHONDONTWRITEBYTECODE=1
colcon build --paths . --event-handlers console_cohesion+
pytest_args=(-p no:cacheprovider)
[ "$#" -gt 0 ] && pytest_args+=("$@")
colcon test --paths . --event-handlers console_direct+ --pytest-args "${pytest_args[@]}"
colcon test-result --verbose
