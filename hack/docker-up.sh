#!/usr/bin/env bash
# Makes sure a Docker engine runs on this machine, started by the project itself: the machines
# here have only the docker CLI, no engine and no systemd. Installs Debian's docker.io (dockerd
# 20.10 with its own containerd) when missing and starts dockerd in the background, its pid file
# in /run/modeldeploy/dockerd.pid and its log and data-root under ~/.cache/modeldeploy/docker (the
# data-root is the image cache, kept between runs). Storage driver: overlay2 when the kernel and
# the backing filesystem take it, vfs otherwise (slow and large, but works anywhere).
# Idempotent: does nothing when `docker info` already answers. hack/docker-down.sh stops it.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/util.sh"
MD_TAG=docker-up
DDIR="$CACHE/docker"
RUN_DIR=/run/modeldeploy
PIDFILE="$RUN_DIR/dockerd.pid"
LOG="$DDIR/dockerd.log"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

if [ -S /var/run/docker.sock ] && timeout 20 "$DOCKER" info >/dev/null 2>&1; then
  exit 0
fi

md::ensure_packages dockerd:docker.io iptables:iptables

mkdir -p "$DDIR/data" "$RUN_DIR"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  md::log "dockerd $(cat "$PIDFILE") runs but does not answer yet; waiting"
else
  rm -f "$PIDFILE"
  driver="${DOCKER_STORAGE_DRIVER:-}"
  if [ -z "$driver" ]; then
    if [ -f "$DDIR/storage-driver" ]; then
      driver="$(cat "$DDIR/storage-driver")"   # never switch drivers under an existing data-root
    elif grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null; then
      driver=overlay2
    else
      driver=vfs
    fi
  fi
  # Containers (docker build RUN steps) reach PyPI through the default bridge: needs forwarding
  # and NAT. dockerd sets up its own MASQUERADE rule; setting ip_forward ourselves first keeps
  # dockerd from switching the FORWARD policy to DROP (which would also drop pod traffic).
  sysctl -qw net.ipv4.ip_forward=1
  start_dockerd() {
    md::log "starting dockerd (storage driver $1), log $LOG"
    # setsid: its own session, so it outlives the calling shell's job control and signals
    setsid dockerd --data-root "$DDIR/data" --pidfile "$PIDFILE" --storage-driver "$1" \
      --iptables=true --ip-masq=true --log-level warn >>"$LOG" 2>&1 < /dev/null &
    echo "$1" > "$DDIR/storage-driver.try"
  }
  start_dockerd "$driver"
fi

for i in $(seq 1 60); do
  if "$DOCKER" info >/dev/null 2>&1; then
    [ -f "$DDIR/storage-driver.try" ] && mv "$DDIR/storage-driver.try" "$DDIR/storage-driver"
    md::log "dockerd up ($("$DOCKER" info --format '{{.ServerVersion}} {{.Driver}} cgroup={{.CgroupDriver}}'))"
    exit 0
  fi
  if [ "$i" -gt 3 ] && ! { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; } \
     && ! pgrep -x dockerd >/dev/null; then
    if [ "$(cat "$DDIR/storage-driver.try" 2>/dev/null)" = overlay2 ] && [ -z "${DOCKER_STORAGE_DRIVER:-}" ]; then
      md::log "dockerd died with overlay2 (see $LOG); retrying with vfs"
      start_dockerd vfs
      continue
    fi
    md::log "dockerd exited; last log lines:"; tail -20 "$LOG" >&2; exit 1
  fi
  sleep 1
done
md::log "dockerd did not answer in 60s; last log lines:"; tail -20 "$LOG" >&2
exit 1
