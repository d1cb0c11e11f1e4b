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
#
# The helpers (processes, certificates, kubeconfigs, image import) are hack/lib/util.sh's, shared
# with local-cluster.sh; every config and manifest is a template under hack/node/.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/util.sh"
MD_TAG=real-node
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
CTR=(ctr --address "$CTRD_SOCK" -n k8s.io)

cmd="${1:-}"
STATE_DIR="${2:-${MODELDEPLOY_CLUSTER_DIR:-$ROOT/.local-cluster}}"
STATE_DIR="$(cd "$STATE_DIR" 2>/dev/null && pwd || echo "$STATE_DIR")"
ND="$STATE_DIR/node"
PKI="$ND/pki"
LOGS="$ND/logs"
PIDS="$ND/pids"

load_cluster() {
  md::load_cluster "$STATE_DIR" \
    || md::die "$STATE_DIR/cluster.env missing: run hack/local-cluster.sh up first"
  { [ -f "$CLUSTER_PKI/ca.crt" ] && [ -f "$CLUSTER_PKI/ca.key" ]; } \
    || md::die "no cluster CA in $CLUSTER_PKI"
  CLUSTER_DOMAIN="${CLUSTER_DOMAIN:-cluster.local}"
}

# ------------------------------------------------------------------ packages and built artefacts
ensure_packages() {
  md::ensure_packages containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    iptables:iptables conntrack:conntrack socat:socat ethtool:ethtool ip:iproute2 openssl:openssl \
    gcc:gcc,libc6-dev
}

# Go builds of the add-ons (cached by version). Both modules build with plain `go install m@v`
# (no replace directives in their go.mod at these releases).
build_addons() {
  local t0 spec name pkg ver out
  for spec in "coredns github.com/coredns/coredns@$COREDNS_VERSION" \
    "metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"; do
    read -r name pkg <<<"$spec"
    ver=${pkg##*@}
    out="$NODE_CACHE/$name-$ver"
    [ -x "$out/$name" ] && continue
    mkdir -p "$out"
    md::log "building $pkg (Go module proxy; minutes on 2 cores)"
    t0=$SECONDS
    GOFLAGS='' CGO_ENABLED=0 GOBIN="$out" go install -trimpath -ldflags '-s -w' "$pkg" >&2
    md::log "built $name $ver in $((SECONDS - t0))s"
  done
  local pause="$NODE_CACHE/pause-$PAUSE_VERSION/pause" src
  if [ ! -x "$pause" ]; then
    src="$(GOFLAGS='' go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
    [ -f "$src" ] || (cd "$CACHE/k8s-$K8S_VERSION/wrapper" 2>/dev/null \
      && GOFLAGS=-mod=mod go mod download k8s.io/kubernetes) >&2
    [ -f "$src" ] || md::die "pause.c not found at $src (run hack/build-k8s.sh first)"
    mkdir -p "$(dirname "$pause")"
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-modeldeploy" -o "$pause" "$src"
    strip "$pause"
  fi
}

# A minimal image around one static binary: docker import of a tiny rootfs (no registry, no base)
image_from_binary() { # image binary-path entrypoint user
  local image=$1 bin=$2 entry=$3 user=$4 tmp
  "$DOCKER" image inspect "$image" >/dev/null 2>&1 && return 0
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/etc" "$tmp/tmp" && chmod 1777 "$tmp/tmp"
  cp "$bin" "$tmp/$(basename "$bin")"
  printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$tmp/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$tmp/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$tmp/etc/ssl/certs/"
  fi
  md::log "docker import $image"
  tar --numeric-owner --owner=0 --group=0 -C "$tmp" -c . \
    | "$DOCKER" import -c "ENTRYPOINT [\"$entry\"]" -c "USER $user" - "$image" >/dev/null
  rm -rf "$tmp"
}

build_node_images() {
  "$HACK/docker-up.sh" >&2
  image_from_binary "$PAUSE_IMAGE" "$NODE_CACHE/pause-$PAUSE_VERSION/pause" /pause 65535:65535
  image_from_binary "$COREDNS_IMAGE" "$NODE_CACHE/coredns-$COREDNS_VERSION/coredns" /coredns 0:0
  image_from_binary "$METRICS_SERVER_IMAGE" \
    "$NODE_CACHE/metrics-server-$METRICS_SERVER_VERSION/metrics-server" /metrics-server 65534:65534
}

import_node_images() {
  local img
  for img in "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$METRICS_SERVER_IMAGE"; do
    md::ctr_import "$CTRD_SOCK" "$img"
  done
}

# The app images, when hack/build-images.sh has built them (it also imports them itself)
import_app_images() {
  local v img
  v="$(md::project_version 2>/dev/null || true)"
  [ -n "$v" ] || return 0
  for img in "modeldeploy-server:$v" "modeldeploy-operator:$v"; do
    if "$DOCKER" image inspect "$img" >/dev/null 2>&1; then md::ctr_import "$CTRD_SOCK" "$img"; fi
  done
}

# -------------------------------------------------------------------------------- certificates
make_pki() {
  mkdir -p "$PKI"
  if [ -f "$PKI/kubelet-client.crt" ] \
    && openssl verify -CAfile "$CLUSTER_PKI/ca.crt" "$PKI/kubelet-client.crt" >/dev/null 2>&1; then
    return 0 # still signed by this cluster's CA
  fi
  md::log "issuing node certificates from $CLUSTER_PKI/ca.crt"
  md::pki::client "$CLUSTER_PKI/ca" "$PKI/kubelet-client" "system:node:$NODE_NAME" system:nodes
  md::pki::client "$CLUSTER_PKI/ca" "$PKI/kube-proxy" system:kube-proxy ""
  md::pki::server "$CLUSTER_PKI/ca" "$PKI/kubelet-serving" "$NODE_NAME" system:nodes \
    "DNS:$NODE_NAME,IP:$NODE_IP,IP:127.0.0.1"
}

# ------------------------------------------------------------------------------ host networking
# Every sysctl we change is recorded once (first value seen) and restored by `down`.
set_sysctl() { # key value
  local key=$1 val=$2 f="/proc/sys/${1//.//}" old
  [ -f "$f" ] || { md::log "sysctl $key missing; skipped"; return 0; }
  old="$(cat "$f")"
  grep -q "^$key=" "$ND/sysctls.orig" 2>/dev/null || echo "$key=$old" >>"$ND/sysctls.orig"
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
render_configs() {
  local v=(CTRD_ROOT="$CTRD_ROOT" CTRD_STATE="$CTRD_STATE" CTRD_SOCK="$CTRD_SOCK"
    PAUSE_IMAGE="$PAUSE_IMAGE" CNI_CONF_DIR="$CNI_CONF_DIR" BRIDGE="$BRIDGE" IPAM_DIR="$IPAM_DIR"
    POD_CIDR="$POD_CIDR" NODE_IP="$NODE_IP" CA_CRT="$CLUSTER_PKI/ca.crt" PKI="$PKI"
    DNS_IP="$DNS_IP" CLUSTER_DOMAIN="$CLUSTER_DOMAIN" ND="$ND" NODE_NAME="$NODE_NAME"
    CLUSTER_CIDR="$CLUSTER_CIDR" COREDNS_IMAGE="$COREDNS_IMAGE"
    METRICS_SERVER_IMAGE="$METRICS_SERVER_IMAGE" APISERVER_PORT="$APISERVER_PORT"
    COREDNS_FORWARD="${COREDNS_UPSTREAM:+forward . $COREDNS_UPSTREAM}")
  md::render "$HACK/node/containerd.toml.in" "$ND/containerd.toml" "${v[@]}"
  md::render "$HACK/node/cni.conflist.in" "$CNI_CONF_DIR/10-modeldeploy.conflist" "${v[@]}"
  local t
  for t in kubelet-config kube-proxy-config coredns metrics-server metrics-apiservice \
    endpointslice; do
    md::render "$HACK/node/$t.yaml.in" "$ND/$t.yaml" "${v[@]}"
  done
}

up() {
  load_cluster
  mkdir -p "$ND" "$LOGS" "$PIDS" "$VAR_DIR" "$RUN_DIR" "$CNI_CONF_DIR" "$IPAM_DIR" "$KUBELET_ROOT" \
    "$CTRD_ROOT"
  local t0=$SECONDS
  ensure_packages
  { [ -x "$BIN_DIR/kubelet" ] && [ -x "$BIN_DIR/kube-proxy" ]; } || "$HACK/build-k8s.sh" node >&2
  build_addons
  build_node_images
  make_pki
  md::kubeconfig_cert "$ND/kubelet.kubeconfig" "system:node:$NODE_NAME" "$PKI/kubelet-client"
  md::kubeconfig_cert "$ND/kube-proxy.kubeconfig" system:kube-proxy "$PKI/kube-proxy"
  setup_network
  render_configs

  if ! md::alive containerd; then
    md::log "starting containerd ($CTRD_SOCK)"
    md::start containerd containerd --config "$ND/containerd.toml"
  fi
  md::wait_for containerd 30 containerd "${CTR[@]}" version
  import_node_images
  import_app_images

  if ! md::alive kubelet; then
    md::log "starting kubelet (node $NODE_NAME, $NODE_IP)"
    md::start kubelet "$BIN_DIR/kubelet" --config "$ND/kubelet-config.yaml" \
      --kubeconfig "$ND/kubelet.kubeconfig" --root-dir "$KUBELET_ROOT" \
      --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
      --node-labels "modeldeploy.io/real-node=true" --v 2
  fi
  if ! md::alive kube-proxy; then
    md::log "starting kube-proxy (iptables)"
    md::start kube-proxy "$BIN_DIR/kube-proxy" --config "$ND/kube-proxy-config.yaml" --v 2
  fi
  md::wait_for "kubelet healthz" 60 kubelet curl -fsS --max-time 2 http://127.0.0.1:10248/healthz
  md::wait_for "kube-proxy healthz" 60 kube-proxy \
    curl -fsS --max-time 2 http://127.0.0.1:10256/healthz
  md::wait_for "node $NODE_NAME Ready" 90 kubelet md::node_ready "$NODE_NAME"
  md::log "node $NODE_NAME Ready"
  apiserver_for_pods

  "${KUBECTL[@]}" apply -f "$ND/coredns.yaml" >/dev/null
  "${KUBECTL[@]}" apply -f "$ND/metrics-server.yaml" >/dev/null
  aggregation_check
  if ! "${KUBECTL[@]}" -n kube-system rollout status deploy/coredns --timeout=120s >&2; then
    "${KUBECTL[@]}" -n kube-system describe pods -l k8s-app=kube-dns | tail -25 >&2
    md::die "CoreDNS did not become ready"
  fi
  "${KUBECTL[@]}" -n kube-system rollout status deploy/metrics-server --timeout=120s >&2 \
    || md::log "metrics-server not ready (see: kubectl -n kube-system logs deploy/metrics-server)"
  printf '%s\n' "NODE_NAME=$NODE_NAME" "NODE_IP=$NODE_IP" "POD_CIDR=$POD_CIDR" "DNS_IP=$DNS_IP" \
    "CONTAINERD_ADDRESS=$CTRD_SOCK" >"$ND/node.env"
  md::log "real node up in $((SECONDS - t0))s; state in $ND"
}

# The control plane binds and advertises 127.0.0.1 only, and the apiserver refuses to publish a
# loopback endpoint for Service default/kubernetes ("may not be in the loopback range"), so pods
# (CoreDNS, metrics-server, the operator) would find no endpoint behind 10.96.0.1:443. Bridge it:
# a socat forwarder on the node address ($NODE_IP:$APISERVER_PORT -> 127.0.0.1:$APISERVER_PORT)
# and an EndpointSlice of our own for that Service (the apiserver's reconciler writes only the
# slice called "kubernetes", which it can't). Also let the apiserver resolve the node's name
# (it dials kubelets by Hostname first): an /etc/hosts line, removed by `down`.
apiserver_for_pods() {
  md::start apiserver-proxy socat "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,fork,reuseaddr" \
    "TCP:127.0.0.1:$APISERVER_PORT"
  "${KUBECTL[@]}" apply -f "$ND/endpointslice.yaml" >/dev/null
  if ! grep -q "# modeldeploy-real-node$" /etc/hosts; then
    echo "$NODE_IP $NODE_NAME # modeldeploy-real-node" >>/etc/hosts
  fi
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
    md::log "WARNING: kube-apiserver runs without --requestheader-client-ca-file/--proxy-client-cert-file:"
    md::log "  metrics-server runs but its APIService stays unregistered (no metrics API, no HPA metrics)"
  fi
}

# ---------------------------------------------------------------------------------------- down
down() {
  mkdir -p "$ND"
  local api="" id ids m ns n r k v
  if [ -f "$STATE_DIR/cluster.env" ]; then
    load_cluster
    "${KUBECTL[@]}" get --raw /readyz >/dev/null 2>&1 && api=1
  fi
  # 1. let the kubelet tear its pods down properly (CNI DEL, volume unmounts) while it still runs
  if [ -n "$api" ] && md::alive kubelet && md::alive containerd; then
    md::log "draining pods from $NODE_NAME"
    "${KUBECTL[@]}" cordon "$NODE_NAME" >/dev/null 2>&1 || true
    "${KUBECTL[@]}" delete pods -A --field-selector "spec.nodeName=$NODE_NAME" \
      --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 1 40); do
      [ -z "$("${CTR[@]}" tasks ls -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  md::stop kube-proxy
  md::stop kubelet
  md::stop apiserver-proxy
  if grep -q "# modeldeploy-real-node$" /etc/hosts; then
    # in place (not sed -i): /etc/hosts may be a bind mount that can't be replaced
    grep -v "# modeldeploy-real-node$" /etc/hosts >"$ND/hosts.tmp"
    cat "$ND/hosts.tmp" >/etc/hosts
    rm -f "$ND/hosts.tmp"
  fi
  if [ -n "$api" ]; then
    "${KUBECTL[@]}" -n default delete endpointslice kubernetes-real-node --ignore-not-found \
      >/dev/null 2>&1 || true
  fi
  # 2. whatever is left: kill tasks, delete containers (the CRI sandboxes go with them)
  if md::alive containerd; then
    ids="$("${CTR[@]}" tasks ls -q 2>/dev/null || true)"
    for id in $ids; do "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    [ -z "$ids" ] || sleep 2
    for id in $ids; do "${CTR[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $("${CTR[@]}" containers ls -q 2>/dev/null || true); do
      "${CTR[@]}" containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  md::stop containerd 30
  # shims outlive containerd by design; ours carry our socket path in their command line
  for id in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" || true); do
    kill -KILL "$id" 2>/dev/null || true
  done
  # 3. mounts: pod volumes, container rootfs, netns bind mounts (deepest first)
  awk -v k="$KUBELET_ROOT" -v s="$RUN_DIR" -v r="$CTRD_ROOT" \
    'index($2,k)==1 || index($2,s)==1 || index($2,r)==1 {print $2}' /proc/self/mounts \
    | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for ns in /var/run/netns/cni-*; do
    [ -e "$ns" ] || continue
    n="$(basename "$ns")"
    if [ -z "$(ip netns pids "$n" 2>/dev/null)" ]; then
      ip netns delete "$n" 2>/dev/null || { umount "$ns" 2>/dev/null; rm -f "$ns"; }
    fi
  done
  # 4. iptables: kube-proxy's own cleanup, then any KUBE-*/CNI-* chain left (filter, nat, mangle)
  if [ -n "${BIN_DIR:-}" ] && [ -x "$BIN_DIR/kube-proxy" ]; then
    "$BIN_DIR/kube-proxy" --cleanup >>"$LOGS/kube-proxy-cleanup.log" 2>&1 || true
  fi
  flush_chains
  # 5. the bridge and the host-local IPAM state (every pod is gone)
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE" 2>/dev/null || true; fi
  # (our Service/cluster CIDR routes went with the bridge) put back routes they had replaced
  if [ -f "$ND/routes.orig" ]; then
    while read -r r; do
      [ -z "$r" ] || eval "ip route add $r" 2>/dev/null || true
    done <"$ND/routes.orig"
    rm -f "$ND/routes.orig"
  fi
  rm -f "$ND/bridge.created"
  rm -rf "${IPAM_DIR:?}"/* 2>/dev/null || true
  # 6. sysctls back to what they were
  if [ -f "$ND/sysctls.orig" ]; then
    while IFS='=' read -r k v; do
      if [ -f "/proc/sys/${k//.//}" ]; then sysctl -qw "$k=$v" 2>/dev/null || true; fi
    done <"$ND/sysctls.orig"
    rm -f "$ND/sysctls.orig"
  fi
  # 7. the Node object, so a later `up` (or kwok) starts from a clean slate
  if [ -n "$api" ]; then
    "${KUBECTL[@]}" delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  fi
  rm -f "$ND/node.env"
  md::log "real node down"
}

flush_chains() {
  local table chain rule
  for table in filter nat mangle; do
    # drop every rule that jumps to one of our chains, then flush and delete the chains
    { iptables -t "$table" -S 2>/dev/null || true; } | { grep -E '^-A .* -j (KUBE-|CNI-)' || true; } \
      | sed 's/^-A/-D/' | while read -r rule; do
        # eval: `iptables -S` quotes comments with spaces
        eval "iptables -t $table $rule" 2>/dev/null || true
      done
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
  local rc=0 c
  for c in containerd kubelet kube-proxy apiserver-proxy; do
    if md::alive "$c"; then
      echo "$c running (pid $(md::pid_of "$c"))"
    else
      echo "$c not running"
      rc=1
    fi
  done
  if md::node_ready "$NODE_NAME"; then
    echo "node $NODE_NAME Ready"
  else
    echo "node $NODE_NAME not Ready"
    rc=1
  fi
  return $rc
}

# ---------------------------------------------------------------------------------------- smoke
# A pod of the server image (or, until that exists, the base image's python3 -m http.server),
# a ClusterIP Service in front of it, one request from the host through kube-proxy.
smoke() {
  load_cluster
  md::node_ready "$NODE_NAME" || md::die "node $NODE_NAME is not Ready (hack/real-node.sh up $STATE_DIR)"
  local ns=modeldeploy-smoke image mode k=("${KUBECTL[@]}" -n modeldeploy-smoke)
  if [ -z "${SMOKE_IMAGE:-}" ] && "$DOCKER" image inspect "modeldeploy-server:$(md::project_version)" \
    >/dev/null 2>&1; then
    image="modeldeploy-server:$(md::project_version)" mode=server
  else
    image="${SMOKE_IMAGE:-modeldeploy-base:bookworm-1}" mode=http
  fi
  md::ctr_import "$CTRD_SOCK" "$image"
  if [ "$("${KUBECTL[@]}" get ns "$ns" -o jsonpath='{.status.phase}' 2>/dev/null)" = Terminating ]; then
    "${KUBECTL[@]}" wait --for=delete "namespace/$ns" --timeout=90s >/dev/null 2>&1 || true
  fi
  "${KUBECTL[@]}" create namespace "$ns" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f - >/dev/null
  if [ "$mode" = server ]; then
    "${k[@]}" create configmap smoke-model --from-file=model.joblib="$(smoke_model)" \
      --dry-run=client -o yaml | "${k[@]}" apply -f - >/dev/null
  fi
  md::render "$HACK/node/smoke-$mode.yaml.in" "$ND/smoke.yaml" SMOKE_IMAGE="$image" \
    NODE_NAME="$NODE_NAME"
  "${k[@]}" delete pod smoke --ignore-not-found --wait=true >/dev/null
  "${k[@]}" apply -f "$ND/smoke.yaml" -f "$HACK/node/smoke-service.yaml" >/dev/null
  if ! "${k[@]}" wait pod/smoke --for=condition=Ready --timeout=180s >&2; then
    "${k[@]}" describe pod smoke | tail -30 >&2
    "${k[@]}" logs smoke --tail=30 >&2 || true
    md::die "smoke pod not Ready"
  fi
  local ip pod_ip url out="" curl=(curl -fsS --max-time 5)
  ip="$("${k[@]}" get svc smoke -o jsonpath='{.spec.clusterIP}')"
  pod_ip="$("${k[@]}" get pod smoke -o jsonpath='{.status.podIP}')"
  md::log "pod smoke ($image) at $pod_ip, Service smoke at $ip:80"
  if [ "$mode" = server ]; then
    url="http://$ip/v1/models/smoke:predict"
    curl+=(-H 'Content-Type: application/json'
      -d '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
  else
    url="http://$ip/"
  fi
  for _ in $(seq 1 20); do
    out="$("${curl[@]}" "$url" 2>&1)" && break
    sleep 1
  done
  echo "POST/GET $url -> $out"
  # DNS from inside the cluster, through CoreDNS
  local dns
  dns="$("${k[@]}" exec smoke -- python3 -c \
    "import socket;print(socket.gethostbyname('smoke.$ns.svc.$CLUSTER_DOMAIN'))" 2>&1)" || true
  echo "in-pod DNS smoke.$ns.svc.$CLUSTER_DOMAIN -> $dns (Service IP $ip)"
  if [ "${SMOKE_KEEP:-0}" != 1 ]; then
    "${k[@]}" delete pod/smoke service/smoke configmap/smoke-model --ignore-not-found \
      --wait=false >/dev/null
  fi
  case "$out" in
    *predictions* | *hello*) return 0 ;;
    *) md::die "unexpected answer from $url" ;;
  esac
}

smoke_model() {
  local f="$ND/smoke-model.joblib" py="$ROOT/.venv/bin/python"
  [ -x "$py" ] || py=python3
  [ -s "$f" ] || "$py" "$HACK/node/smoke_model.py" "$f"
  echo "$f"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  smoke) smoke ;;
  images) load_cluster; import_node_images; import_app_images ;;
  build) ensure_packages; build_addons; build_node_images ;;
  *) echo "usage: $0 up STATE_DIR | down STATE_DIR | smoke [STATE_DIR] | status STATE_DIR | images STATE_DIR | build" >&2; exit 2 ;;
esac
