#!/usr/bin/env bash
# Stage the package as an install lays it out (methods/ and tasks/ inside peftbench/) and print the
# folder to put on PYTHONPATH. For running from source without installing (the GPU machine) and for
# `lint-imports`, whose import graph an editable install's package-dir mapping hides.
#
#   stage=$(bash scripts/stage_package.sh [FOLDER]) && PYTHONPATH=$stage lint-imports
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
stage=${1:-$(mktemp -d)}
rm -rf "$stage/peftbench"
mkdir -p "$stage/peftbench"
cp -r "$repo/peftbench/." "$stage/peftbench/"
cp -r "$repo/methods" "$stage/peftbench/methods"
cp -r "$repo/tasks" "$stage/peftbench/tasks"
find "$stage/peftbench" -name __pycache__ -prune -exec rm -rf {} +
echo "$stage"
