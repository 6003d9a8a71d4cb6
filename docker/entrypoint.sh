#!/usr/bin/env bash
# The image's entry point: the pack's commands (README "Docker and Ray").
#   dub ARGS...     one dub (python <pack> ARGS...)
#   batch ARGS...   a folder or a list of jobs (add --ray auto inside a Ray cluster)
#   serve ARGS...   the dubbing server
#   avatar ARGS...  prepare / speak / list / remove avatars
#   ray-worker      join the Ray cluster at $RAY_ADDRESS (head:6379) with this container's GPUs and CPUs
#   ray-head        start a Ray head here (then submit: batch JOBS --ray auto)
set -euo pipefail
PACK=/opt/musetalk_enhanced
command=${1:---help}
shift || true
case "$command" in
  dub) exec python "$PACK" "$@" ;;
  batch|serve|avatar) exec python "$PACK" "$command" "$@" ;;
  ray-worker) exec ray start --address="${RAY_ADDRESS:?set RAY_ADDRESS=head:6379}" --block "$@" ;;
  ray-head) exec ray start --head --dashboard-host=0.0.0.0 --block "$@" ;;
  -h|--help|help)
    sed -n '2,8p' "$0"
    ;;
  *) echo "unknown command: $command (dub, batch, serve, avatar, ray-worker, ray-head)" >&2; exit 2 ;;
esac
