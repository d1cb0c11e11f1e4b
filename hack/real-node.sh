#!/usr/bin/env bash
# Adds one real node to the local control plane of hack/local-cluster.sh, so real pods run real
# images and serve real predictions: containerd (CRI) + runc with the cgroupfs driver (cgroup v1
# here), a bridge CNI (Debian's containernetworking-plugins), the kubelet and kube-proxy (iptables)
# built by hack/build-k8s.sh, plus CoreDNS and metrics-server built from the Go module proxy at
# pinned releases. No image registry is reachable: every image (pause, coredns, metrics-server, the
# app images) is built locally and imported into containerd's k8s.io namespace; nothing is pulled.
#
# usage: hack/real-node.sh up STATE_DIR     start the node (idempotent); STATE_DIR is
#                                            local-cluster.sh's (cluster.env, pki/ca.*, kubeconfig)
#        hack/real-node.sh down STATE_DIR   stop it and remove every process, mount, netns, bridge
#                                            and iptables rule it made
#        hack/real-node.sh smoke [STATE_DIR]  run a pod, reach it through a ClusterIP Service from
#                                            the host, print the answer
#        hack/real-node.sh status STATE_DIR | images STATE_DIR (re-import docker images) | build
#
# Addresses (all created here, nothing on the VM's own interface receives traffic):
#   bridge cni0 = 10.244.200.1/24 is the node's InternalIP (kubelet listens there on :10250),
#   pods get 10.244.200.0/24, Services 10.96.0.0/16 (the control plane's), cluster DNS 10.96.0.10.
# State: $STATE_DIR/node/ (certs, kubeconfigs, rendered configs, logs, pids, sysctls.orig),
#   /var/lib/modeldeploy/node (kubelet root, CNI config + IPAM), /run/modeldeploy/node (containerd
#   state + socket), ~/.cache/modeldeploy/node (built binaries and containerd's image store).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/hack"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.1}"          # kubeadm 1.34's CoreDNS
METRICS_SERVER_VERSION="${METRICS_SERVER_VERSION:-v0.9.0}"
PAUSE_VERSION="${PAUSE_VERSION:-3.10.1}"               # kubeadm 1.34's pause
PAUSE_IMAGE="registry.k8s.io/pause:$PAUSE_VERSION"
COREDNS_IMAGE="modeldeploy-local/coredns:$COREDNS_VERSION"
METRICS_SERVER_IMAGE="modeldeploy-local/metrics-server:$METRICS_SERVER_VERSION"
NODE_NAME="${REAL_NODE_NAME:-modeldeploy-node-0}"
BRIDGE=cni0
POD_CIDR=10.244.200.0/24
NODE_IP=10.244.200.1
CLUSTER_CIDR=10.244.0.0/16
DNS_IP=10.96.0.10
NODE_CACHE="$CACHE/node"
VAR_DIR=/var/lib/modeldeploy/node
RUN_DIR=/run/modeldeploy/node
KUBELET_ROOT="$VAR_DIR/kubelet"
CNI_CONF_DIR="$VAR_DIR/cni/net.d"
IPAM_DIR="$VAR_DIR/cni/ipam"
CTRD_ROOT="$NODE_CACHE/containerd"
CTRD_STATE="$RUN_DIR/containerd"
CTRD_SOCK="$RUN_DIR/containerd.sock"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
DOCKER=/usr/bin/docker
CTR=(ctr --address "$CTRD_SOCK" -n k8s.io)

say() { echo ">> [real-node] $*" >&2; }
die() { echo "!! [real-node] $*" >&2; exit 1; }

cmd="${1:-}"
STATE_DIR="${2:-${MODELDEPLOY_CLUSTER_DIR:-$ROOT/.local-cluster}}"
STATE_DIR="$(cd "$STATE_DIR" 2>/dev/null && pwd || echo "$STATE_DIR")"
ND="$STATE_DIR/node"
PKI="$ND/pki"
LOGS="$ND/logs"
PIDS="$ND/pids"

load_cluster() {
  [ -f "$STATE_DIR/cluster.env" ] || die "$STATE_DIR/cluster.env missing: run hack/local-cluster.sh up first"
  # shellcheck disable=SC1091
  . "$STATE_DIR/cluster.env"
  [ -f "$STATE_DIR/pki/ca.crt" ] && [ -f "$STATE_DIR/pki/ca.key" ] || die "no cluster CA in $STATE_DIR/pki"
  KUBECTL=("$BIN_DIR/kubectl" --kubeconfig "$STATE_DIR/kubeconfig")
  CLUSTER_DOMAIN="${CLUSTER_DOMAIN:-cluster.local}"
}

alive() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

start() { # name cmd... : setsid, so the pid is its process group too
  local name=$1; shift
  if alive "$name"; then return 0; fi
  mkdir -p "$LOGS" "$PIDS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}

stop() { # name [timeout]
  local name=$1 t=${2:-20} pid
  [ -f "$PIDS/$name.pid" ] || return 0
  pid="$(cat "$PIDS/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $name ($pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 "$t"); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$PIDS/$name.pid"
}

wait_for() { # what seconds cmd...
  local what=$1 t=$2; shift 2
  for _ in $(seq 1 "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "$what not ready after ${t}s (logs in $LOGS)"
}

render() { # template out  (replaces @VAR@ with the exported shell variable VAR; writes on change)
  python3 - "$1" "$2" <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
text = open(src).read()
def sub(m):
    v = os.environ.get(m.group(1))
    if v is None:
        raise SystemExit(f"render {src}: @{m.group(1)}@ has no value")
    return v
out = re.sub(r"@([A-Z_]+)@", sub, text)
# write only on change: kube-proxy exits when its config file is touched
if not os.path.exists(dst) or open(dst).read() != out:
    open(dst, "w").write(out)
PY
}

# ------------------------------------------------------------------ packages and built artefacts
ensure_packages() {
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v socat >/dev/null || need+=(socat)
  command -v ethtool >/dev/null || need+=(ethtool)
  command -v ip >/dev/null || need+=(iproute2)
  command -v openssl >/dev/null || need+=(openssl)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1; apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
  fi
}

# Go builds of the add-ons (cached by version). Both modules build with plain `go install m@v`
# (no replace directives in their go.mod at these releases).
build_addons() {
  local t0
  for spec in "coredns github.com/coredns/coredns@$COREDNS_VERSION" \
              "metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"; do
    set -- $spec
    local name=$1 pkg=$2 ver=${2##*@}
    local out="$NODE_CACHE/$name-$ver"
    [ -x "$out/$name" ] && continue
    mkdir -p "$out"
    say "building $pkg (Go module proxy; minutes on 2 cores)"
    t0=$(date +%s)
    GOFLAGS='' CGO_ENABLED=0 GOBIN="$out" go install -trimpath -ldflags '-s -w' "$pkg" >&2
    say "built $name $ver in $(( $(date +%s) - t0 ))s"
  done
  local pause="$NODE_CACHE/pause-$PAUSE_VERSION/pause"
  if [ ! -x "$pause" ]; then
    local src
    src="$(GOFLAGS='' go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
    [ -f "$src" ] || (cd "$CACHE/k8s-$K8S_VERSION/wrapper" 2>/dev/null && GOFLAGS=-mod=mod go mod download k8s.io/kubernetes) >&2
    [ -f "$src" ] || die "pause.c not found at $src (run hack/build-k8s.sh first)"
    mkdir -p "$(dirname "$pause")"
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-modeldeploy" -o "$pause" "$src"
    strip "$pause"
  fi
}

# Minimal images from a tiny rootfs: docker import (no registry, no base image needed)
build_node_images() {
  "$HERE/docker-up.sh" >&2
  local tmp
  img_from_binary() { # image binary-path entrypoint user
    local image=$1 bin=$2 entry=$3 user=$4
    "$DOCKER" image inspect "$image" >/dev/null 2>&1 && return 0
    tmp="$(mktemp -d)"
    mkdir -p "$tmp/etc" "$tmp/tmp" && chmod 1777 "$tmp/tmp"
    cp "$bin" "$tmp/$(basename "$bin")"
    printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' > "$tmp/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$tmp/etc/group"
    [ -f /etc/ssl/certs/ca-certificates.crt ] && mkdir -p "$tmp/etc/ssl/certs" \
      && cp /etc/ssl/certs/ca-certificates.crt "$tmp/etc/ssl/certs/"
    say "docker import $image"
    tar --numeric-owner --owner=0 --group=0 -C "$tmp" -c . \
      | "$DOCKER" import -c "ENTRYPOINT [\"$entry\"]" -c "USER $user" - "$image" >/dev/null
    rm -rf "$tmp"
  }
  img_from_binary "$PAUSE_IMAGE" "$NODE_CACHE/pause-$PAUSE_VERSION/pause" /pause 65535:65535
  img_from_binary "$COREDNS_IMAGE" "$NODE_CACHE/coredns-$COREDNS_VERSION/coredns" /coredns 0:0
  img_from_binary "$METRICS_SERVER_IMAGE" "$NODE_CACHE/metrics-server-$METRICS_SERVER_VERSION/metrics-server" \
    /metrics-server 65534:65534
}

# docker save | ctr import, skipped when containerd already holds that docker image id (recorded
# beside containerd's root, which hack/build-images.sh writes too)
import_image() { # docker-image-ref
  local ref=$1 full id rec
  id="$("$DOCKER" image inspect -f '{{.Id}}' "$ref" 2>/dev/null)" || { say "no docker image $ref; skipped"; return 0; }
  case "$ref" in */*/*|*.*/*) full=$ref ;; */*) full="docker.io/$ref" ;; *) full="docker.io/library/$ref" ;; esac
  rec="$NODE_CACHE/imported/$(echo "$full" | tr '/:' '__')"
  if [ "$(cat "$rec" 2>/dev/null)" = "$id" ] && [ -n "$("${CTR[@]}" images ls -q "name==$full" 2>/dev/null)" ]; then
    return 0
  fi
  say "importing $ref into containerd (k8s.io)"
  "$DOCKER" save "$ref" | "${CTR[@]}" images import - >/dev/null
  mkdir -p "$NODE_CACHE/imported"
  echo "$id" > "$rec"
}

# -------------------------------------------------------------------------------- certificates
sign() { # name CN O ext-lines...
  local name=$1 cn=$2 org=$3; shift 3
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$@" > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$STATE_DIR/pki/ca.crt" -CAkey "$STATE_DIR/pki/ca.key" \
    -CAcreateserial -CAserial "$PKI/ca.srl" -days 3650 -sha256 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  mkdir -p "$PKI"
  if [ -f "$PKI/kubelet-client.crt" ] \
     && openssl verify -CAfile "$STATE_DIR/pki/ca.crt" "$PKI/kubelet-client.crt" >/dev/null 2>&1; then
    return 0   # still signed by this cluster's CA
  fi
  say "issuing node certificates from $STATE_DIR/pki/ca.crt"
  local client=("basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment"
    "extendedKeyUsage=clientAuth")
  sign kubelet-client "system:node:$NODE_NAME" system:nodes "${client[@]}"
  sign kube-proxy system:kube-proxy "" "${client[@]}"
  sign kubelet-serving "$NODE_NAME" system:nodes "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:$NODE_NAME,IP:$NODE_IP,IP:127.0.0.1"
  chmod 600 "$PKI"/*.key
}

write_kubeconfig() { # path user cert-name
  local b64ca b64crt b64key
  b64ca="$(base64 -w0 < "$STATE_DIR/pki/ca.crt")"
  b64crt="$(base64 -w0 < "$PKI/$3.crt")"
  b64key="$(base64 -w0 < "$PKI/$3.key")"
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$APISERVER_URL", certificate-authority-data: $b64ca}
users:
- name: $2
  user: {client-certificate-data: $b64crt, client-key-data: $b64key}
contexts:
- name: default
  context: {cluster: local, user: $2}
current-context: default
EOF
  chmod 600 "$1"
}

# ------------------------------------------------------------------------------ host networking
# Every sysctl we change is recorded once (first value seen) and restored by `down`.
set_sysctl() { # key value
  local key=$1 val=$2 f="/proc/sys/${1//.//}" old
  [ -f "$f" ] || { say "sysctl $key missing; skipped"; return 0; }
  old="$(cat "$f")"
  grep -q "^$key=" "$ND/sysctls.orig" 2>/dev/null || echo "$key=$old" >> "$ND/sysctls.orig"
  [ "$old" = "$val" ] || sysctl -qw "$key=$val"
}

setup_network() {
  modprobe br_netfilter 2>/dev/null || true
  set_sysctl net.ipv4.ip_forward 1
  set_sysctl net.bridge.bridge-nf-call-iptables 1   # Service DNAT for pod->pod on one bridge
  # the apiserver listens on 127.0.0.1 only and advertises that address: kube-proxy DNATs
  # pods' traffic for 10.96.0.1:443 to 127.0.0.1, which the kernel routes only with route_localnet
  set_sysctl net.ipv4.conf.all.route_localnet 1
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    echo "$BRIDGE" > "$ND/bridge.created"
  fi
  # (no `| grep -q` under pipefail: ip may die of SIGPIPE and the test would lie)
  case "$(ip -4 -o addr show dev "$BRIDGE")" in
    *" $NODE_IP/"*) ;;
    *) ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE" ;;
  esac
  ip link set "$BRIDGE" up
  set_sysctl "net.ipv4.conf.$BRIDGE.route_localnet" 1
  # Service IPs and the cluster's pod range must never leave this machine. Host processes (the
  # apiserver's aggregator and webhooks, curl) route a Service IP before kube-proxy's OUTPUT DNAT
  # applies; a brand-new Service whose rules kube-proxy hasn't written yet would otherwise go out
  # the default route, where this workplace's egress proxy answers any :443 (seen: the aggregator
  # cached such a connection and every metrics.k8s.io request got the proxy's 404,
  # "server: keryx"). Routed into the bridge instead, an unprogrammed Service IP just times out.
  local cidr saved
  for cidr in "${SERVICE_CIDR:-10.96.0.0/16}" "$CLUSTER_CIDR"; do
    saved="$(ip -4 route show exact "$cidr" | grep -v " dev $BRIDGE " || true)"
    if [ -n "$saved" ] && ! grep -qxF "$saved" "$ND/routes.orig" 2>/dev/null; then
      echo "$saved" >> "$ND/routes.orig"
    fi
    ip route replace "$cidr" dev "$BRIDGE" src "$NODE_IP"
  done
}

# ------------------------------------------------------------------------------------------ up
up() {
  load_cluster
  mkdir -p "$ND" "$LOGS" "$PIDS" "$VAR_DIR" "$RUN_DIR" "$CNI_CONF_DIR" "$IPAM_DIR" "$KUBELET_ROOT" "$CTRD_ROOT"
  local t0; t0=$(date +%s)
  ensure_packages
  [ -x "$BIN_DIR/kubelet" ] && [ -x "$BIN_DIR/kube-proxy" ] || "$HERE/build-k8s.sh" node >&2
  build_addons
  build_node_images
  make_pki
  write_kubeconfig "$ND/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet-client
  write_kubeconfig "$ND/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
  setup_network

  export CTRD_ROOT CTRD_STATE CTRD_SOCK PAUSE_IMAGE CNI_CONF_DIR BRIDGE IPAM_DIR POD_CIDR NODE_IP \
    CA_CRT="$STATE_DIR/pki/ca.crt" PKI DNS_IP CLUSTER_DOMAIN ND NODE_NAME CLUSTER_CIDR \
    COREDNS_IMAGE METRICS_SERVER_IMAGE
  export COREDNS_FORWARD=""
  [ -n "${COREDNS_UPSTREAM:-}" ] && COREDNS_FORWARD="forward . $COREDNS_UPSTREAM"
  render "$HERE/node/containerd.toml.in" "$ND/containerd.toml"
  render "$HERE/node/cni.conflist.in" "$CNI_CONF_DIR/10-modeldeploy.conflist"
  render "$HERE/node/kubelet-config.yaml.in" "$ND/kubelet-config.yaml"
  render "$HERE/node/kube-proxy-config.yaml.in" "$ND/kube-proxy-config.yaml"
  render "$HERE/node/coredns.yaml.in" "$ND/coredns.yaml"
  render "$HERE/node/metrics-server.yaml.in" "$ND/metrics-server.yaml"
  render "$HERE/node/metrics-apiservice.yaml.in" "$ND/metrics-apiservice.yaml"

  if ! alive containerd; then
    say "starting containerd ($CTRD_SOCK)"
    start containerd containerd --config "$ND/containerd.toml"
  fi
  wait_for containerd 30 "${CTR[@]}" version
  for img in "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$METRICS_SERVER_IMAGE"; do import_image "$img"; done
  import_app_images

  if ! alive kubelet; then
    say "starting kubelet (node $NODE_NAME, $NODE_IP)"
    start kubelet "$BIN_DIR/kubelet" --config "$ND/kubelet-config.yaml" \
      --kubeconfig "$ND/kubelet.kubeconfig" --root-dir "$KUBELET_ROOT" \
      --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
      --node-labels "modeldeploy.io/real-node=true" --v 2
  fi
  if ! alive kube-proxy; then
    say "starting kube-proxy (iptables)"
    start kube-proxy "$BIN_DIR/kube-proxy" --config "$ND/kube-proxy-config.yaml" --v 2
  fi
  wait_for "kubelet healthz" 60 curl -fsS --max-time 2 http://127.0.0.1:10248/healthz
  wait_for "kube-proxy healthz" 60 curl -fsS --max-time 2 http://127.0.0.1:10256/healthz
  wait_for "node $NODE_NAME Ready" 90 node_ready
  say "node $NODE_NAME Ready"
  apiserver_for_pods

  "${KUBECTL[@]}" apply -f "$ND/coredns.yaml" >/dev/null
  "${KUBECTL[@]}" apply -f "$ND/metrics-server.yaml" >/dev/null
  aggregation_check
  "${KUBECTL[@]}" -n kube-system rollout status deploy/coredns --timeout=120s >&2 \
    || { "${KUBECTL[@]}" -n kube-system describe pods -l k8s-app=kube-dns | tail -25 >&2; die "CoreDNS did not become ready"; }
  "${KUBECTL[@]}" -n kube-system rollout status deploy/metrics-server --timeout=120s >&2 \
    || say "metrics-server not ready (see: kubectl -n kube-system logs deploy/metrics-server)"
  {
    echo "NODE_NAME=$NODE_NAME"; echo "NODE_IP=$NODE_IP"; echo "POD_CIDR=$POD_CIDR"
    echo "DNS_IP=$DNS_IP"; echo "CONTAINERD_ADDRESS=$CTRD_SOCK"
  } > "$ND/node.env"
  say "real node up in $(( $(date +%s) - t0 ))s; state in $ND"
}

# The control plane binds and advertises 127.0.0.1 only, and the apiserver refuses to publish a
# loopback endpoint for Service default/kubernetes ("may not be in the loopback range"), so pods
# (CoreDNS, metrics-server, the operator) would find no endpoint behind 10.96.0.1:443. Bridge it:
# a socat forwarder on the node address ($NODE_IP:$APISERVER_PORT -> 127.0.0.1:$APISERVER_PORT)
# and an EndpointSlice of our own for that Service (the apiserver's reconciler writes only the
# slice called "kubernetes", which it can't). Also let the apiserver resolve the node's name
# (it dials kubelets by Hostname first): an /etc/hosts line, removed by `down`.
apiserver_for_pods() {
  start apiserver-proxy socat "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,fork,reuseaddr" "TCP:127.0.0.1:$APISERVER_PORT"
  "${KUBECTL[@]}" apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-real-node
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: modeldeploy-real-node
addressType: IPv4
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
ports:
- {name: https, port: $APISERVER_PORT, protocol: TCP}
EOF
  if ! grep -q "# modeldeploy-real-node$" /etc/hosts; then
    echo "$NODE_IP $NODE_NAME # modeldeploy-real-node" >> /etc/hosts
  fi
}

node_ready() {
  [ "$("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# The app images, when hack/build-images.sh has built them (it also imports them itself)
import_app_images() {
  local v
  v="$(python3 -c 'import tomllib;print(tomllib.load(open("'"$ROOT"'/pyproject.toml","rb"))["project"]["version"])' 2>/dev/null || true)"
  [ -n "$v" ] || return 0
  for img in "modeldeploy-server:$v" "modeldeploy-operator:$v"; do
    "$DOCKER" image inspect "$img" >/dev/null 2>&1 && import_image "$img"
  done
  return 0
}

# metrics-server needs the apiserver's front-proxy (aggregation layer) configuration; without it
# the APIService would be unavailable, which breaks discovery and so every namespace deletion
aggregation_check() {
  local ca
  ca="$("${KUBECTL[@]}" -n kube-system get configmap extension-apiserver-authentication \
      -o jsonpath='{.data.requestheader-client-ca-file}' 2>/dev/null || true)"
  if [[ "$ca" == *BEGIN* ]]; then
    "${KUBECTL[@]}" apply -f "$ND/metrics-apiservice.yaml" >/dev/null
  else
    "${KUBECTL[@]}" delete apiservice v1beta1.metrics.k8s.io --ignore-not-found >/dev/null
    say "WARNING: kube-apiserver runs without --requestheader-client-ca-file/--proxy-client-cert-file:"
    say "  metrics-server runs but its APIService stays unregistered (no metrics API, no HPA metrics)"
  fi
}

# ---------------------------------------------------------------------------------------- down
down() {
  mkdir -p "$ND"
  local kubectl=""
  if [ -f "$STATE_DIR/cluster.env" ]; then
    load_cluster
    "${KUBECTL[@]}" get --raw /readyz >/dev/null 2>&1 && kubectl=1
  fi
  # 1. let the kubelet tear its pods down properly (CNI DEL, volume unmounts) while it still runs
  if [ -n "$kubectl" ] && alive kubelet && alive containerd; then
    say "draining pods from $NODE_NAME"
    "${KUBECTL[@]}" cordon "$NODE_NAME" >/dev/null 2>&1 || true
    "${KUBECTL[@]}" delete pods -A --field-selector "spec.nodeName=$NODE_NAME" \
      --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 1 40); do
      [ -z "$("${CTR[@]}" tasks ls -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  stop kube-proxy
  stop kubelet
  stop apiserver-proxy
  if grep -q "# modeldeploy-real-node$" /etc/hosts; then
    # in place (not sed -i): /etc/hosts may be a bind mount that can't be replaced
    grep -v "# modeldeploy-real-node$" /etc/hosts > "$ND/hosts.tmp"; cat "$ND/hosts.tmp" > /etc/hosts; rm -f "$ND/hosts.tmp"
  fi
  [ -n "$kubectl" ] && "${KUBECTL[@]}" -n default delete endpointslice kubernetes-real-node --ignore-not-found >/dev/null 2>&1 || true
  # 2. whatever is left: kill tasks, delete containers (the CRI sandboxes go with them)
  if alive containerd; then
    local ids
    ids="$("${CTR[@]}" tasks ls -q 2>/dev/null || true)"
    for id in $ids; do "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    [ -n "$ids" ] && sleep 2
    for id in $ids; do "${CTR[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $("${CTR[@]}" containers ls -q 2>/dev/null || true); do
      "${CTR[@]}" containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop containerd 30
  # shims outlive containerd by design; ours carry our socket path in their command line
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" || true); do kill -KILL "$p" 2>/dev/null || true; done
  # 3. mounts: pod volumes, container rootfs, netns bind mounts (deepest first)
  awk -v k="$KUBELET_ROOT" -v s="$RUN_DIR" -v r="$CTRD_ROOT" \
    'index($2,k)==1 || index($2,s)==1 || index($2,r)==1 {print $2}' /proc/self/mounts \
    | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for ns in /var/run/netns/cni-*; do
    [ -e "$ns" ] || continue
    local n; n="$(basename "$ns")"
    [ -z "$(ip netns pids "$n" 2>/dev/null)" ] && { ip netns delete "$n" 2>/dev/null || { umount "$ns" 2>/dev/null; rm -f "$ns"; }; }
  done
  # 4. iptables: kube-proxy's own cleanup, then any KUBE-*/CNI-* chain left (filter, nat, mangle)
  if [ -n "${BIN_DIR:-}" ] && [ -x "$BIN_DIR/kube-proxy" ]; then
    "$BIN_DIR/kube-proxy" --cleanup >>"$LOGS/kube-proxy-cleanup.log" 2>&1 || true
  fi
  flush_chains
  # 5. the bridge and the host-local IPAM state (every pod is gone)
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" 2>/dev/null || true
  # (our Service/cluster CIDR routes went with the bridge) put back routes they had replaced
  if [ -f "$ND/routes.orig" ]; then
    while read -r r; do [ -n "$r" ] && eval "ip route add $r" 2>/dev/null || true; done < "$ND/routes.orig"
    rm -f "$ND/routes.orig"
  fi
  rm -f "$ND/bridge.created"
  rm -rf "${IPAM_DIR:?}"/* 2>/dev/null || true
  # 6. sysctls back to what they were
  if [ -f "$ND/sysctls.orig" ]; then
    while IFS='=' read -r k v; do
      [ -f "/proc/sys/${k//.//}" ] && sysctl -qw "$k=$v" 2>/dev/null || true
    done < "$ND/sysctls.orig"
    rm -f "$ND/sysctls.orig"
  fi
  # 7. the Node object, so a later `up` (or kwok) starts from a clean slate
  [ -n "$kubectl" ] && "${KUBECTL[@]}" delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  rm -f "$ND/node.env"
  say "real node down"
}

flush_chains() {
  local table chain
  for table in filter nat mangle; do
    # drop every rule that jumps to one of our chains, then flush and delete the chains
    { iptables -t "$table" -S 2>/dev/null || true; } | { grep -E '^-A .* -j (KUBE-|CNI-)' || true; } \
      | sed 's/^-A/-D/' | while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null || true; done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}'); do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}'); do
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

status() {
  load_cluster
  local rc=0
  for c in containerd kubelet kube-proxy apiserver-proxy; do
    if alive "$c"; then echo "$c running (pid $(cat "$PIDS/$c.pid"))"; else echo "$c not running"; rc=1; fi
  done
  node_ready && echo "node $NODE_NAME Ready" || { echo "node $NODE_NAME not Ready"; rc=1; }
  return $rc
}

# ---------------------------------------------------------------------------------------- smoke
# A pod of the server image (or, until that exists, the base image's python3 -m http.server),
# a ClusterIP Service in front of it, one request from the host through kube-proxy.
smoke() {
  load_cluster
  node_ready || die "node $NODE_NAME is not Ready (hack/real-node.sh up $STATE_DIR)"
  local ns=modeldeploy-smoke v image mode
  v="$(python3 -c 'import tomllib;print(tomllib.load(open("'"$ROOT"'/pyproject.toml","rb"))["project"]["version"])')"
  if [ -z "${SMOKE_IMAGE:-}" ] && "$DOCKER" image inspect "modeldeploy-server:$v" >/dev/null 2>&1; then
    image="modeldeploy-server:$v"; mode=server
  else
    image="${SMOKE_IMAGE:-modeldeploy-base:bookworm-1}"; mode=http
  fi
  import_image "$image"
  if [ "$("${KUBECTL[@]}" get ns "$ns" -o jsonpath='{.status.phase}' 2>/dev/null)" = Terminating ]; then
    "${KUBECTL[@]}" wait --for=delete "namespace/$ns" --timeout=90s >/dev/null 2>&1 || true
  fi
  "${KUBECTL[@]}" create namespace "$ns" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f - >/dev/null
  if [ "$mode" = server ]; then
    "${KUBECTL[@]}" -n "$ns" create configmap smoke-model --from-file=model.joblib="$(smoke_model)" \
      --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f - >/dev/null
  fi
  SMOKE_IMAGE_REF="$image" SMOKE_MODE="$mode" NODE_NAME="$NODE_NAME" python3 - > "$ND/smoke.yaml" <<'PY'
import json, os
image, mode, node = os.environ["SMOKE_IMAGE_REF"], os.environ["SMOKE_MODE"], os.environ["NODE_NAME"]
labels = {"app": "smoke"}
if mode == "server":
    container = {
        "name": "server", "image": image, "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "MODEL_NAME", "value": "smoke"},
                {"name": "STORAGE_URI", "value": "file:///mnt/smoke/model.joblib"},
                {"name": "MODEL_FORMAT", "value": "sklearn"},
                {"name": "MODEL_DIR", "value": "/mnt/models"}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "volumeMounts": [{"name": "model", "mountPath": "/mnt/smoke", "readOnly": True},
                         {"name": "models", "mountPath": "/mnt/models"},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }
    volumes = [{"name": "model", "configMap": {"name": "smoke-model"}},
               {"name": "models", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
else:
    container = {
        "name": "http", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "mkdir -p /tmp/www && echo \"hello from $(hostname) on the real node\" > /tmp/www/index.html && exec python3 -m http.server 8080 --directory /tmp/www"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "tmp", "emptyDir": {}}]
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "smoke", "labels": labels},
       "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [container],
                "volumes": volumes, "terminationGracePeriodSeconds": 2}}
svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "smoke"},
       "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod, svc]}))
PY
  "${KUBECTL[@]}" -n "$ns" delete pod smoke --ignore-not-found --wait=true >/dev/null
  "${KUBECTL[@]}" -n "$ns" apply -f "$ND/smoke.yaml" >/dev/null
  if ! "${KUBECTL[@]}" -n "$ns" wait pod/smoke --for=condition=Ready --timeout=180s >&2; then
    "${KUBECTL[@]}" -n "$ns" describe pod smoke | tail -30 >&2
    "${KUBECTL[@]}" -n "$ns" logs smoke --tail=30 >&2 || true
    die "smoke pod not Ready"
  fi
  local ip pod_ip url out
  ip="$("${KUBECTL[@]}" -n "$ns" get svc smoke -o jsonpath='{.spec.clusterIP}')"
  pod_ip="$("${KUBECTL[@]}" -n "$ns" get pod smoke -o jsonpath='{.status.podIP}')"
  say "pod smoke ($image) at $pod_ip, Service smoke at $ip:80"
  if [ "$mode" = server ]; then
    url="http://$ip/v1/models/smoke:predict"
    for _ in $(seq 1 20); do
      out="$(curl -fsS --max-time 5 -H 'Content-Type: application/json' \
        -d '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}' "$url" 2>&1)" && break; sleep 1
    done
  else
    url="http://$ip/"
    for _ in $(seq 1 20); do out="$(curl -fsS --max-time 5 "$url" 2>&1)" && break; sleep 1; done
  fi
  echo "POST/GET $url -> $out"
  # DNS from inside the cluster, through CoreDNS
  local dns
  dns="$("${KUBECTL[@]}" -n "$ns" exec smoke -- python3 -c \
    "import socket;print(socket.gethostbyname('smoke.$ns.svc.$CLUSTER_DOMAIN'))" 2>&1)" || true
  echo "in-pod DNS smoke.$ns.svc.$CLUSTER_DOMAIN -> $dns (Service IP $ip)"
  [ "${SMOKE_KEEP:-0}" = 1 ] || "${KUBECTL[@]}" -n "$ns" delete pod/smoke service/smoke configmap/smoke-model \
    --ignore-not-found --wait=false >/dev/null
  case "$out" in *predictions*|*hello*) return 0 ;; *) die "unexpected answer from $url" ;; esac
}

# a tiny iris-like model, trained with the project's own venv (scikit-learn comes from pyproject)
smoke_model() {
  local f="$ND/smoke-model.joblib" py="$ROOT/.venv/bin/python"
  [ -x "$py" ] || py=python3
  [ -s "$f" ] || "$py" - "$f" <<'PY'
import sys, joblib
from sklearn.linear_model import LogisticRegression
X = [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2], [6.7, 3.1, 4.4, 1.4], [6.3, 2.5, 4.9, 1.5],
     [6.3, 3.3, 6.0, 2.5], [7.1, 3.0, 5.9, 2.1]]
y = [0, 0, 1, 1, 2, 2]
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), sys.argv[1])
PY
  echo "$f"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  smoke) smoke ;;
  images) load_cluster; for img in "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$METRICS_SERVER_IMAGE"; do import_image "$img"; done; import_app_images ;;
  build) ensure_packages; build_addons; build_node_images ;;
  *) echo "usage: $0 up STATE_DIR | down STATE_DIR | smoke [STATE_DIR] | status STATE_DIR | images STATE_DIR | build" >&2; exit 2 ;;
esac
