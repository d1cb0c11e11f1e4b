#!/usr/bin/env bash
# A real, local Kubernetes control plane run as plain processes on loopback, so the operator's
# integration tests talk to a genuine kube-apiserver (admission, OpenAPI validation, RBAC, the
# scale subresource, ownerReference garbage collection, the Deployment/ReplicaSet/HPA controllers)
# without containers, VMs or internet. Pods are "run" by kwok on a fake node: they get scheduled,
# become Running/Ready (or crash, see below) without any image being pulled.
#
# usage: hack/local-cluster.sh up [--real-node]   start (idempotent); prints the admin kubeconfig
#                                                   path as the last line on stdout
#        hack/local-cluster.sh down               stop exactly what `up` started, remove its state
#                                                 (only the files listed below; others' files in
#                                                 the directory, e.g. kind kubeconfigs, stay)
#        hack/local-cluster.sh status             one line per component; exit 1 if any is unhealthy
#        hack/local-cluster.sh operator-kubeconfig
#                                                 apply the namespace/ServiceAccount/RBAC objects of
#                                                 deploy/ (not the operator Deployment) and write
#                                                 $STATE_DIR/operator.kubeconfig, which authenticates
#                                                 as system:serviceaccount:modeldeploy-system:
#                                                 modeldeploy-operator with a TokenRequest token
#        hack/local-cluster.sh env                print the ports/paths as shell assignments
#
# Environment: MODELDEPLOY_CLUSTER_DIR (state dir, default <repo>/.local-cluster),
#              MODELDEPLOY_CACHE (binary cache, default ~/.cache/modeldeploy, see build-k8s.sh).
#
# State dir layout (stable; hack/real-node.sh and the tests rely on it):
#   $STATE_DIR/cluster.env        shell assignments: ETCD_PORT ETCD_PEER_PORT APISERVER_PORT
#                                 KCM_PORT SCHEDULER_PORT KWOK_PORT APISERVER_URL
#                                 (https://127.0.0.1:$APISERVER_PORT) SERVICE_CIDR
#                                 (10.96.0.0/16) KUBERNETES_SVC_IP (10.96.0.1) CLUSTER_DOMAIN
#                                 (cluster.local) BIN_DIR (the k8s binaries, kubectl and etcd
#                                 included)
#   $STATE_DIR/kubeconfig         admin (CN=admin, O=system:masters), certs embedded
#   $STATE_DIR/operator.kubeconfig  written by `operator-kubeconfig`
#   $STATE_DIR/kubeconfigs/{controller-manager,scheduler,kwok}.kubeconfig
#   $STATE_DIR/pki/ca.{crt,key}   the cluster CA: signs every cert below, is the apiserver's
#                                 --client-ca-file and the controller-manager's
#                                 --cluster-signing-{cert,key}-file (so kubelet CSRs get signed)
#   $STATE_DIR/pki/apiserver.{crt,key}   serving cert; SANs 127.0.0.1, localhost, kubernetes,
#                                 kubernetes.default, kubernetes.default.svc(.cluster.local), 10.96.0.1
#   $STATE_DIR/pki/{admin,controller-manager,scheduler,kwok,apiserver-kubelet-client}.{crt,key}
#   $STATE_DIR/pki/front-proxy-ca.{crt,key}, front-proxy-client.{crt,key}  aggregation layer
#   $STATE_DIR/pki/sa.{key,pub}   service-account signing key pair
#   $STATE_DIR/audit-policy.yaml, $STATE_DIR/logs/audit.log   every mutating request (Metadata
#                                 level, JSON lines): the tests count the operator's writes here
#   $STATE_DIR/kwok-stages.yaml   kwok's pod stages (see "kwok" below), kwok-node.yaml its node
#   $STATE_DIR/logs/<component>.log, $STATE_DIR/pids/<component>.pid (each started with setsid,
#                                 so the pid is also its process group)
#   $STATE_DIR/etcd/              etcd's data dir
#   $STATE_DIR/real-node          present when `up --real-node` was used
#   $STATE_DIR/node/              hack/real-node.sh's own state (removed by `down` too)
#
# kwok: manages only nodes annotated kwok.x-k8s.io/node=fake; `up` creates one, `kwok-node-0`,
# labelled type=kwok; fake pod IPs come from 10.244.0.0/17. Pod lifecycle stages: pods become
# Ready at once, except pods whose container env STORAGE_URI contains "/kwok-crash/": those
# simulate a server that can't load its model: the
# container terminates (exit code 1, message "could not load the model from <uri>: no such object
# (simulated by kwok)") and then sits in CrashLoopBackOff with that lastState, as a kubelet reports.
#
# The apiserver serves on loopback only, and an Endpoints address may not be loopback, so the
# `kubernetes` Service's endpoints are not reconciled (--endpoint-reconciler-type none): in-cluster
# clients of a real node need their own route to $APISERVER_URL (hack/real-node.sh's business).
#
# --real-node: after the control plane is up, runs `hack/real-node.sh up "$STATE_DIR"` (and `down`
# runs `hack/real-node.sh down "$STATE_DIR"` first); the kwok node then gets the taint
# kwok.x-k8s.io/node=fake:NoSchedule so ordinary pods land on the real node.
#
# The helpers (processes, certificates, kubeconfigs, packages) are hack/lib/util.sh's, shared with
# real-node.sh; the configs it writes are rendered from hack/cluster/.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/util.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/util.sh"
STATE_DIR="${MODELDEPLOY_CLUSTER_DIR:-$ROOT/.local-cluster}"
PKI="$STATE_DIR/pki"
CLUSTER_PKI="$PKI"
LOGS="$STATE_DIR/logs"
PIDS="$STATE_DIR/pids"
KCFGS="$STATE_DIR/kubeconfigs"
SERVICE_CIDR="10.96.0.0/16"
KUBERNETES_SVC_IP="10.96.0.1"
CLUSTER_DOMAIN="cluster.local"
NODE_NAME="kwok-node-0"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
OWNED=(cluster.env kubeconfig operator.kubeconfig kubeconfigs pki logs pids etcd audit-policy.yaml
  kwok-stages.yaml kwok-node.yaml deploy-rendered.yaml deploy-rbac.json real-node node)
ENV_VARS=(ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHEDULER_PORT KWOK_PORT APISERVER_URL
  SERVICE_CIDR KUBERNETES_SVC_IP CLUSTER_DOMAIN BIN_DIR)

ensure_tools() {
  md::ensure_packages openssl:openssl curl:curl jq:jq setsid:util-linux
  BIN_DIR="$("$HACK/build-k8s.sh" core | tail -n1)"
  KUBECTL=("$BIN_DIR/kubectl" --kubeconfig "$STATE_DIR/kubeconfig")
  # build-k8s.sh builds etcd 3.6 (what Kubernetes 1.34 is tested with); Debian's etcd-server (3.4)
  # is only the fallback when that binary is absent. Either way it runs on our own ports.
  ETCD="$BIN_DIR/etcd"
  if [ ! -x "$ETCD" ]; then
    md::ensure_packages etcd:etcd-server
    ETCD="$(command -v etcd)"
  fi
}

make_pki() {
  mkdir -p "$PKI"
  md::pki::ca "$PKI/ca" modeldeploy-local-ca
  # the aggregation layer's request-header CA (for extension API servers such as metrics-server)
  md::pki::ca "$PKI/front-proxy-ca" modeldeploy-local-front-proxy-ca
  md::pki::server "$PKI/ca" "$PKI/apiserver" kube-apiserver "" \
    "IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
  md::pki::client "$PKI/ca" "$PKI/admin" admin system:masters
  md::pki::client "$PKI/ca" "$PKI/controller-manager" system:kube-controller-manager ""
  md::pki::client "$PKI/ca" "$PKI/scheduler" system:kube-scheduler ""
  # kwok simulates kubelets for any node/pod; it is test infrastructure, not under test.
  md::pki::client "$PKI/ca" "$PKI/kwok" kwok system:masters
  md::pki::client "$PKI/ca" "$PKI/apiserver-kubelet-client" kube-apiserver-kubelet-client system:masters
  md::pki::client "$PKI/front-proxy-ca" "$PKI/front-proxy-client" front-proxy-client ""
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

api_get() { # path
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$APISERVER_URL$1"
}

health_url() { # component -> url
  case "$1" in
    etcd) echo "http://127.0.0.1:$ETCD_PORT/health" ;;
    kube-apiserver) echo "$APISERVER_URL/readyz" ;;
    kube-controller-manager) echo "https://127.0.0.1:$KCM_PORT/healthz" ;;
    kube-scheduler) echo "https://127.0.0.1:$SCHEDULER_PORT/healthz" ;;
    kwok) echo "http://127.0.0.1:$KWOK_PORT/healthz" ;;
  esac
}

healthy() { # component
  md::alive "$1" || return 1
  if [ "$1" = kube-apiserver ]; then
    api_get /readyz >/dev/null 2>&1
    return
  fi
  curl -fsSk --max-time 5 "$(health_url "$1")" >/dev/null 2>&1
}

all_healthy() {
  md::load_cluster "$STATE_DIR" || return 1
  local c
  for c in "${COMPONENTS[@]}"; do healthy "$c" || return 1; done
  md::node_ready "$NODE_NAME"
}

# ---------------------------------------------------------------- commands
cmd_up() {
  local real_node=0 a
  for a in "$@"; do
    case "$a" in
      --real-node) real_node=1 ;;
      *) md::die "unknown flag $a (usage: up [--real-node])" ;;
    esac
  done
  ensure_tools
  if [ -f "$STATE_DIR/cluster.env" ] && all_healthy; then
    md::log "cluster already up ($APISERVER_URL)"
    maybe_real_node "$real_node"
    echo "$STATE_DIR/kubeconfig"
    return 0
  fi
  if [ -f "$STATE_DIR/cluster.env" ] || [ -d "$PIDS" ]; then
    md::log "stale state in $STATE_DIR: stopping leftovers and starting fresh"
    cmd_down >/dev/null
  fi
  local t0=$SECONDS v
  mkdir -p "$STATE_DIR" "$LOGS" "$PIDS" "$KCFGS"
  read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHEDULER_PORT KWOK_PORT \
    <<<"$(md::py free-ports 6)"
  APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"
  for v in "${ENV_VARS[@]}"; do echo "$v=${!v}"; done >"$STATE_DIR/cluster.env"
  make_pki
  md::kubeconfig_cert "$STATE_DIR/kubeconfig" admin "$PKI/admin"
  md::kubeconfig_cert "$KCFGS/controller-manager.kubeconfig" system:kube-controller-manager \
    "$PKI/controller-manager"
  md::kubeconfig_cert "$KCFGS/scheduler.kubeconfig" system:kube-scheduler "$PKI/scheduler"
  md::kubeconfig_cert "$KCFGS/kwok.kubeconfig" kwok "$PKI/kwok"
  md::render "$HACK/cluster/audit-policy.yaml" "$STATE_DIR/audit-policy.yaml"
  md::render "$HACK/cluster/kwok-stages.yaml" "$STATE_DIR/kwok-stages.yaml"
  md::render "$HACK/cluster/kwok-node.yaml.in" "$STATE_DIR/kwok-node.yaml" NODE_NAME="$NODE_NAME"

  md::log "starting etcd on 127.0.0.1:$ETCD_PORT"
  md::start etcd "$ETCD" --name local --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new --snapshot-count 10000
  md::wait_for "etcd health" 30 etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

  md::log "starting kube-apiserver on $APISERVER_URL"
  md::start kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-bootstrap-token-auth \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --endpoint-reconciler-type none \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
    --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --allow-privileged \
    --audit-policy-file "$STATE_DIR/audit-policy.yaml" \
    --audit-log-path "$LOGS/audit.log" --audit-log-maxsize 200 --audit-log-maxbackup 1
  md::wait_for "kube-apiserver /readyz" 120 kube-apiserver api_get /readyz

  md::log "starting kube-controller-manager, kube-scheduler"
  local kcm="$KCFGS/controller-manager.kubeconfig" sch="$KCFGS/scheduler.kubeconfig"
  # kwok keeps its node alive with a Lease only when given --node-lease-duration-seconds (below);
  # with a --config of pod stages alone it picks a stage that refreshes node status every
  # 600-1210 s and no Lease, so after the grace period the node controller marks the node and
  # every pod NotReady for good (kwok only sets Ready once). The 5 min grace period is a second
  # guard against a slow heartbeat on a loaded machine.
  # --kube-api-qps/burst: the controller-manager's default 20 QPS caps the Deployment and
  # ReplicaSet controllers at ~20 writes/s, i.e. ~150 s for 500 ModelDeployments to roll out
  # (bench/operator_scale.py); kwokctl uses 5000 for its fake clusters, 100/200 is plenty here.
  md::start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$kcm" --authentication-kubeconfig "$kcm" --authorization-kubeconfig "$kcm" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
    --controllers '*' --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --horizontal-pod-autoscaler-sync-period 5s \
    --horizontal-pod-autoscaler-downscale-stabilization 30s \
    --node-monitor-grace-period 5m \
    --kube-api-qps 100 --kube-api-burst 200
  md::start kube-scheduler "$BIN_DIR/kube-scheduler" \
    --kubeconfig "$sch" --authentication-kubeconfig "$sch" --authorization-kubeconfig "$sch" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false \
    --kube-api-qps 100 --kube-api-burst 200

  md::log "starting kwok (fake node $NODE_NAME)"
  md::start kwok "$BIN_DIR/kwok" --kubeconfig "$KCFGS/kwok.kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.244.0.0/17 --node-ip 10.0.0.1 \
    --server-address "127.0.0.1:$KWOK_PORT" \
    --config "$STATE_DIR/kwok-stages.yaml" \
    --node-lease-duration-seconds 40
  "${KUBECTL[@]}" apply -f "$STATE_DIR/kwok-node.yaml" >/dev/null
  md::wait_for "kube-controller-manager /healthz" 60 kube-controller-manager \
    healthy kube-controller-manager
  md::wait_for "kube-scheduler /healthz" 60 kube-scheduler healthy kube-scheduler
  md::wait_for "node $NODE_NAME Ready" 90 kwok md::node_ready "$NODE_NAME"
  md::wait_for "ServiceAccount default/default" 90 kube-controller-manager \
    "${KUBECTL[@]}" get serviceaccount default -n default
  md::log "control plane up in $((SECONDS - t0))s; logs in $LOGS"
  maybe_real_node "$real_node"
  echo "$STATE_DIR/kubeconfig"
}

maybe_real_node() {
  [ "$1" = 1 ] || return 0
  touch "$STATE_DIR/real-node"
  "${KUBECTL[@]}" taint node "$NODE_NAME" kwok.x-k8s.io/node=fake:NoSchedule --overwrite >/dev/null
  md::log "starting the real node (hack/real-node.sh up $STATE_DIR)"
  "$HACK/real-node.sh" up "$STATE_DIR" >&2
}

cmd_down() {
  if [ ! -f "$STATE_DIR/cluster.env" ] && [ ! -d "$PIDS" ]; then
    md::log "nothing to stop (no cluster state in $STATE_DIR)"
    return 0
  fi
  if [ -f "$STATE_DIR/real-node" ]; then
    "$HACK/real-node.sh" down "$STATE_DIR" >&2 || md::log "hack/real-node.sh down failed"
  fi
  local i f
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do md::stop "${COMPONENTS[$i]}"; done
  # Only what `up` (and real-node.sh, under node/) made: other scripts keep files here too
  # (hack/demo.sh and hack/e2e-kind.sh put kind kubeconfigs in .local-cluster/).
  for f in "${OWNED[@]}"; do rm -rf "${STATE_DIR:?}/$f"; done
  rmdir "$STATE_DIR" 2>/dev/null || true
  md::log "stopped; removed the cluster's state from $STATE_DIR"
}

cmd_status() {
  if ! md::load_cluster "$STATE_DIR"; then
    echo "cluster: down (no $STATE_DIR/cluster.env)"
    return 1
  fi
  local c rc=0 state
  for c in "${COMPONENTS[@]}"; do
    if healthy "$c"; then
      state="healthy"
    elif md::alive "$c"; then
      state="running, NOT healthy" rc=1
    else
      state="NOT running" rc=1
    fi
    printf '%-24s pid %-8s %-22s %s\n' "$c" "$(md::pid_of "$c" || echo -)" "$state" \
      "$(health_url "$c")"
  done
  if md::node_ready "$NODE_NAME"; then
    printf '%-24s %s\n' "node/$NODE_NAME" Ready
  else
    printf '%-24s %s\n' "node/$NODE_NAME" "NOT Ready"
    rc=1
  fi
  if [ -f "$STATE_DIR/real-node" ]; then
    "$HACK/real-node.sh" status "$STATE_DIR" || rc=1
  fi
  printf '%-24s %s\n' kubeconfig "$STATE_DIR/kubeconfig"
  printf '%-24s %s\n' logs "$LOGS"
  return $rc
}

cmd_env() {
  md::load_cluster "$STATE_DIR" || md::die "cluster is not up"
  cat "$STATE_DIR/cluster.env"
  echo "STATE_DIR=$STATE_DIR"
  echo "KUBECONFIG=$STATE_DIR/kubeconfig"
}

cmd_operator_kubeconfig() {
  md::load_cluster "$STATE_DIR" || md::die "cluster is not up (run: $0 up)"
  [ -f "$ROOT/deploy/kustomization.yaml" ] || md::die "deploy/kustomization.yaml does not exist yet"
  # Only the identity and its permissions: the operator itself runs outside the cluster here.
  "${KUBECTL[@]}" kustomize "$ROOT/deploy" >"$STATE_DIR/deploy-rendered.yaml"
  "${KUBECTL[@]}" create --dry-run=client -o json -f "$STATE_DIR/deploy-rendered.yaml" \
    | jq '(if .kind == "List" then . else {apiVersion: "v1", kind: "List", items: [.]} end)
          | .items |= map(select(.kind as $k | ["Namespace", "ServiceAccount", "Role",
              "ClusterRole", "RoleBinding", "ClusterRoleBinding"] | index($k)))' \
      >"$STATE_DIR/deploy-rbac.json"
  "${KUBECTL[@]}" apply --server-side --force-conflicts --field-manager local-cluster \
    -f "$STATE_DIR/deploy-rbac.json" >&2
  local ns=modeldeploy-system sa=modeldeploy-operator token
  md::wait_for "ServiceAccount $ns/$sa" 30 "" "${KUBECTL[@]}" get serviceaccount "$sa" -n "$ns"
  token="$("${KUBECTL[@]}" create token "$sa" -n "$ns" --duration 720h)"
  md::kubeconfig "$STATE_DIR/operator.kubeconfig" "$sa" "$ns" "{token: $token}"
  echo "$STATE_DIR/operator.kubeconfig"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  operator-kubeconfig) cmd_operator_kubeconfig ;;
  *) echo "usage: $0 up [--real-node] | down | status | env | operator-kubeconfig" >&2; exit 2 ;;
esac
