#!/usr/bin/env bash
# Build the serving image and push it under the tag config.json names (docker_image), so that
# the Supervisely ecosystem runs exactly what was built. Run from anywhere:
#
#   docker/publish.sh                 # build and push
#   DRY_RUN=1 docker/publish.sh       # print the commands only
#   OPENVINO_WEIGHTS="int8 int4" docker/publish.sh
set -euo pipefail
cd "$(dirname "$0")/.."
image=$(python3 -c 'import json; print(json.load(open("config.json"))["docker_image"])')
sdk=$(grep -i '^supervisely==' requirements.txt | cut -d= -f3)
label=$(grep '^LABEL python_sdk_version=' docker/Dockerfile | cut -d= -f2)
if [ "$sdk" != "$label" ]; then
    echo "docker/Dockerfile's LABEL python_sdk_version=$label differs from requirements.txt's supervisely==$sdk" >&2
    exit 1
fi
run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }
run docker build -f docker/Dockerfile --build-arg OPENVINO_WEIGHTS="${OPENVINO_WEIGHTS:-int8}" -t "$image" .
run docker push "$image"
