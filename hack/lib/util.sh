# shellcheck shell=bash
# Helpers shared by the hack/ scripts (sourced, never run), after the pattern of Kubernetes'
# hack/lib/util.sh: one md:: namespace, nothing happens on sourcing but setting a few paths.
# local-cluster.sh and real-node.sh used to carry a copy each of the process, certificate,
# kubeconfig and package helpers, and the copies drifted (log truncation, stop timeouts, waits
# that did or didn't notice a dead component); one copy can't drift. Where they differed, the
# behaviour kept is written at the function.
#
# Variables a script sets before using the process helpers: LOGS and PIDS (its log and pid dirs),
# MD_TAG (optional: the tag its messages carry, e.g. "real-node").

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HACK="$ROOT/hack"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
# Debian's docker 20.10 client (docker-up.sh installs it): its built-in BuildKit needs no buildx
# plugin, and the machine's /usr/local/bin/docker is a newer CLI without one. A full path, not a
# PATH lookup: on a fresh machine it appears only once docker-up.sh has run.
DOCKER="${DOCKER:-/usr/bin/docker}"

md::log() { echo ">> ${MD_TAG:+[$MD_TAG] }$*" >&2; }
md::die() { echo "error: ${MD_TAG:+[$MD_TAG] }$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------ packages
# Install first and `apt-get update` only when that fails: a machine with fresh lists needs no
# network round trip, and a fresh machine (no lists at all) still gets its packages.
md::apt_install() { # pkg...
  md::log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 && return 0
  apt-get update -qq >&2 || true
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

md::ensure_packages() { # probe:pkg[,pkg...]...  probe is a command name or an absolute path
  local spec probe pkgs=() more=()
  for spec in "$@"; do
    probe=${spec%%:*}
    if [[ $probe == /* ]]; then
      [ -e "$probe" ] && continue
    else
      command -v "$probe" >/dev/null 2>&1 && continue
    fi
    IFS=, read -ra more <<<"${spec#*:}"
    pkgs+=("${more[@]}")
  done
  [ "${#pkgs[@]}" -eq 0 ] || md::apt_install "${pkgs[@]}"
}

# ------------------------------------------------------------------- the Python half (util.py)
# system python3, not the venv: these run before hack/bootstrap.sh has made it
md::py() { /usr/bin/env python3 "$HACK/lib/util.py" "$@"; }
md::render() { md::py render "$@"; }   # template dst|- [KEY=VALUE...]; writes dst only on change
md::project_version() { md::py version; }

# ------------------------------------------------------------------------------------ processes
md::pid_of() { [ -f "$PIDS/$1.pid" ] && cat "$PIDS/$1.pid"; }
md::alive() { local p; p="$(md::pid_of "$1")" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# Starts cmd in its own session (setsid), so its pid is also its process group and md::stop gets
# the children too; a no-op while it runs, so `up` can be re-run over a half-started set. The log
# is appended to after a header line (real-node.sh's way; local-cluster.sh truncated it): a
# component restarted by a second `up` keeps the output of the run that crashed above the new one.
md::start() { # name cmd...
  local name=$1
  shift
  md::alive "$name" && return 0
  mkdir -p "$LOGS" "$PIDS"
  printf '=== %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$LOGS/$name.log"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

md::group_alive() { kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }

# TERM to the process group, then KILL what is left of it after the timeout. Kept from the two
# copies: real-node.sh's per-component timeout (default 20 s; local-cluster.sh had a fixed 15 s,
# too short for containerd), local-cluster.sh's 0.1 s polling (a stopped component costs 0.1 s,
# not a full second), and a wait for the whole group rather than the leader alone, so children
# that outlive their parent are killed too instead of being left behind.
md::stop() { # name [timeout-seconds]
  local name=$1 timeout=${2:-20} pid deadline
  pid="$(md::pid_of "$name")" || return 0
  if [ -n "$pid" ] && md::group_alive "$pid"; then
    md::log "stopping $name ($pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while md::group_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if md::group_alive "$pid"; then
      md::log "$name still running after ${timeout}s: KILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$PIDS/$name.pid"
}

# Polls cmd until it succeeds. With a component named (local-cluster.sh's way; real-node.sh's copy
# only timed out), a component that exits meanwhile fails at once, with its log's tail: a crash
# shows its reason instead of a timeout a minute later.
md::wait_for() { # what timeout-seconds component|"" cmd...
  local what=$1 timeout=$2 comp=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$comp" ] && ! md::alive "$comp"; then
      tail -n 30 "$LOGS/$comp.log" >&2 || true
      md::die "$comp exited while waiting for $what (log: $LOGS/$comp.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      if [ -n "$comp" ]; then tail -n 30 "$LOGS/$comp.log" >&2 || true; fi
      md::die "timed out after ${timeout}s waiting for $what (logs in $LOGS)"
    fi
    sleep 0.5
  done
}

# ------------------------------------------------------------------ certificates and kubeconfigs
md::pki::ca() { # prefix CN: a self-signed CA at prefix.{crt,key}
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 3650 \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  chmod 600 "$1.key"
}

# The serial file goes beside the new certificate, not the CA: real-node.sh signs with the control
# plane's CA and must not write into its pki/.
md::pki::sign() { # ca-prefix out-prefix CN O|"" extension-lines...
  local ca=$1 out=$2 cn=$3 org=$4
  shift 4
  local subj="/CN=$cn"
  [ -z "$org" ] || subj="/O=$org$subj"
  openssl genrsa -out "$out.key" 2048 2>/dev/null
  chmod 600 "$out.key"
  openssl req -new -key "$out.key" -subj "$subj" -out "$out.csr" 2>/dev/null
  printf '%s\n' "$@" >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$ca.crt" -CAkey "$ca.key" \
    -CAserial "$(dirname "$out")/$(basename "$ca").srl" -CAcreateserial \
    -days 3650 -sha256 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$out.ext"
}

md::pki::client() { # ca-prefix out-prefix CN O|""
  md::pki::sign "$@" "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=clientAuth"
}

md::pki::server() { # ca-prefix out-prefix CN O|"" subjectAltNames (DNS:x,IP:y,...)
  md::pki::sign "$1" "$2" "$3" "$4" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    "subjectAltName=$5"
}

md::b64() { base64 -w0 <"$1"; }

# A kubeconfig for $APISERVER_URL trusting $CLUSTER_PKI/ca.crt (hack/cluster/kubeconfig.yaml.in).
md::kubeconfig() { # path user namespace auth   (auth: a YAML flow mapping, e.g. "{token: T}")
  (
    umask 077
    md::render "$HACK/cluster/kubeconfig.yaml.in" "$1" APISERVER_URL="$APISERVER_URL" \
      CA_DATA="$(md::b64 "$CLUSTER_PKI/ca.crt")" KC_USER="$2" KC_NAMESPACE="$3" KC_AUTH="$4"
  )
  chmod 600 "$1"
}

md::kubeconfig_cert() { # path user cert-prefix
  md::kubeconfig "$1" "$2" default \
    "{client-certificate-data: $(md::b64 "$3.crt"), client-key-data: $(md::b64 "$3.key")}"
}

# ------------------------------------------------------------------------------- the cluster
# Reads local-cluster.sh's cluster.env (ports, APISERVER_URL, BIN_DIR, ...) and sets KUBECTL.
md::load_cluster() { # state-dir
  [ -f "$1/cluster.env" ] || return 1
  # shellcheck source=/dev/null
  . "$1/cluster.env"
  CLUSTER_PKI="$1/pki"
  KUBECTL=("$BIN_DIR/kubectl" --kubeconfig "$1/kubeconfig")
}

md::node_ready() { # node-name
  [ "$("${KUBECTL[@]}" get node "$1" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# docker save | ctr import into the k8s.io namespace, skipped when containerd already holds that
# docker image id (a record under $CACHE/node/imported/; build-images.sh and real-node.sh both
# import, and the server image takes 30-50 s).
md::ctr_import() { # containerd-socket docker-image-ref
  local ctr=(ctr --address "$1" -n k8s.io) ref=$2 full id rec
  id="$("$DOCKER" image inspect -f '{{.Id}}' "$ref" 2>/dev/null)" \
    || { md::log "no docker image $ref; skipped"; return 0; }
  case "$ref" in
    */*/* | *.*/*) full=$ref ;;
    */*) full="docker.io/$ref" ;;
    *) full="docker.io/library/$ref" ;;
  esac
  rec="$CACHE/node/imported/${full//[\/:]/_}"
  if [ "$(cat "$rec" 2>/dev/null)" = "$id" ] \
    && [ -n "$("${ctr[@]}" images ls -q "name==$full" 2>/dev/null)" ]; then
    return 0
  fi
  md::log "importing $ref into containerd (k8s.io)"
  "$DOCKER" save "$ref" | "${ctr[@]}" images import - >/dev/null
  mkdir -p "$CACHE/node/imported"
  echo "$id" >"$rec"
}
