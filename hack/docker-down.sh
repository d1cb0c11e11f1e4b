#!/usr/bin/env bash
# Stops the dockerd that hack/docker-up.sh started (by its pid file, never by name), waits until
# it and its containerd are gone, and unmounts what it left under its data-root. Images stay cached
# in the data-root. Idempotent.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/util.sh"
MD_TAG=docker-down
DDIR="$CACHE/docker"
PIDFILE=/run/modeldeploy/dockerd.pid

if [ -f "$PIDFILE" ] && pid="$(cat "$PIDFILE")" && kill -0 "$pid" 2>/dev/null; then
  md::log "stopping dockerd $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then md::log "dockerd $pid ignored TERM; killing"; kill -KILL "$pid"; fi
else
  md::log "no dockerd of ours is running"
fi
rm -f "$PIDFILE"
# dockerd's own containerd (its pid file lives under dockerd's exec root)
cpid_file=/var/run/docker/containerd/containerd.pid
if [ -f "$cpid_file" ] && cpid="$(cat "$cpid_file")" && kill -0 "$cpid" 2>/dev/null; then
  for _ in $(seq 1 15); do kill -0 "$cpid" 2>/dev/null || break; sleep 1; done
  kill -0 "$cpid" 2>/dev/null && { md::log "stopping dockerd's containerd $cpid"; kill -TERM "$cpid"; sleep 2; }
fi
# leftover mounts under the data-root or exec root (deepest first)
awk -v a="$DDIR/data" '$2 ~ "^"a || $2 ~ "^/run/docker" || $2 ~ "^/var/run/docker" {print $2}' /proc/self/mounts \
  | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
md::log "stopped"
