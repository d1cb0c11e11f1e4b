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
#   $STATE_DIR/kwok-stages.yaml   kwok's pod stages (see "kwok" below)
#   $STATE_DIR/logs/<component>.log, $STATE_DIR/pids/<component>.pid (each started with setsid,
#                                 so the pid is also its process group)
#   $STATE_DIR/etcd/              etcd's data dir
#   $STATE_DIR/real-node          present when `up --real-node` was used
#   $STATE_DIR/node/              hack/real-node.sh's own state (removed by `down` too)
#
# kwok: manages only nodes annotated kwok.x-k8s.io/node=fake; `up` creates one, `kwok-node-0`,
# labelled type=kwok; fake pod IPs come from 10.244.0.0/17. Pod lifecycle stages: pods become Ready at once, except pods whose container
# env STORAGE_URI contains "/kwok-crash/": those simulate a server that can't load its model: the
# container terminates (exit code 1, message "could not load the model from <uri>: no such object
# (simulated by kwok)") and then sits in CrashLoopBackOff with that lastState, as a kubelet reports.
#
# The apiserver serves on loopback only, and an Endpoints address may not be loopback, so the
# `kubernetes` Service's endpoints are not reconciled (--endpoint-reconciler-type none): in-cluster
# clients of a real node need their own route to $APISERVER_URL (hack/real-node.sh's business).
#
# --real-node: after the control plane is up, runs `hack/real-node.sh up "$STATE_DIR"` when that
# script exists (and `down` runs `hack/real-node.sh down "$STATE_DIR"` first); the kwok node then
# gets the taint kwok.x-k8s.io/node=fake:NoSchedule so ordinary pods land on the real node.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${MODELDEPLOY_CLUSTER_DIR:-$ROOT/.local-cluster}"
PKI="$STATE_DIR/pki"
LOGS="$STATE_DIR/logs"
PIDS="$STATE_DIR/pids"
KCFGS="$STATE_DIR/kubeconfigs"
SERVICE_CIDR="10.96.0.0/16"
KUBERNETES_SVC_IP="10.96.0.1"
CLUSTER_DOMAIN="cluster.local"
NODE_NAME="kwok-node-0"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
OWNED=(cluster.env kubeconfig operator.kubeconfig kubeconfigs pki logs pids etcd audit-policy.yaml
  kwok-stages.yaml deploy-rendered.yaml deploy-rbac.json real-node node)

log() { echo ">> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

ensure_tools() {
  local pkgs=()
  command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  command -v jq >/dev/null 2>&1 || pkgs+=(jq)
  command -v setsid >/dev/null 2>&1 || pkgs+=(util-linux)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    log "installing ${pkgs[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq "${pkgs[@]}" >&2
  fi
  BIN_DIR="$("$ROOT/hack/build-k8s.sh" core | tail -n1)"
  KUBECTL="$BIN_DIR/kubectl"
  # build-k8s.sh builds etcd 3.6 (what Kubernetes 1.34 is tested with); Debian's etcd-server (3.4)
  # is only the fallback when that binary is absent. Either way it runs on our own ports.
  ETCD="$BIN_DIR/etcd"
  if [ ! -x "$ETCD" ]; then
    if ! command -v etcd >/dev/null 2>&1; then
      log "installing etcd-server (apt-get)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
    fi
    ETCD="$(command -v etcd)"
  fi
}

free_ports() { # prints $1 distinct free loopback ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# ---------------------------------------------------------------- certificates and kubeconfigs
sign() { # name CN O ext-lines...  -> $PKI/name.{key,crt} signed by $PKI/${CA:-ca}.crt
  local name=$1 cn=$2 org=$3 ca=${CA:-ca}; shift 3
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$@" > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_ca() { # name CN
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -days 3650 \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

make_pki() {
  mkdir -p "$PKI"
  make_ca ca modeldeploy-local-ca
  # the aggregation layer's request-header CA (for extension API servers such as metrics-server)
  make_ca front-proxy-ca modeldeploy-local-front-proxy-ca
  local client=("basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment"
    "extendedKeyUsage=clientAuth")
  sign apiserver kube-apiserver "" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
  sign admin admin system:masters "${client[@]}"
  sign controller-manager system:kube-controller-manager "" "${client[@]}"
  sign scheduler system:kube-scheduler "" "${client[@]}"
  # kwok simulates kubelets for any node/pod; it is test infrastructure, not under test.
  sign kwok kwok system:masters "${client[@]}"
  sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "${client[@]}"
  CA=front-proxy-ca sign front-proxy-client front-proxy-client "" "${client[@]}"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

b64() { base64 -w0 < "$1"; }

write_kubeconfig() { # path user certname
  local path=$1 user=$2 cert=$3
  cat > "$path" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: modeldeploy-local
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(b64 "$PKI/$cert.crt")
    client-key-data: $(b64 "$PKI/$cert.key")
contexts:
- name: $user@modeldeploy-local
  context: {cluster: modeldeploy-local, user: $user}
current-context: $user@modeldeploy-local
EOF
  chmod 600 "$path"
}

write_audit_policy() {
  cat > "$STATE_DIR/audit-policy.yaml" <<'EOF'
# Every mutating request at Metadata level; reads and lease heartbeats are not logged.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: None
  resources:
  - group: coordination.k8s.io
    resources: [leases]
- level: Metadata
EOF
}

write_kwok_stages() {
  # Node stages are kwok's defaults (none given here). Pod stages are kwok's "fast" set plus a
  # crash simulation; giving any Pod stage replaces kwok's default Pod stages, so all are here.
  local crash='[.spec.containers[].env[]? | select(.name == "STORAGE_URI") | .value | contains("/kwok-crash/")] | any'
  cat > "$STATE_DIR/kwok-stages.yaml" <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
    - key: '$crash'
      operator: 'NotIn'
      values: ['true']
  next:
    statusTemplate: |
      {{ \$now := Now }}
      conditions:
      - lastTransitionTime: {{ \$now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ \$now | Quote }}
        status: "True"
        type: Ready
      - lastTransitionTime: {{ \$now | Quote }}
        status: "True"
        type: ContainersReady
      {{ range .spec.readinessGates }}
      - lastTransitionTime: {{ \$now | Quote }}
        status: "True"
        type: {{ .conditionType | Quote }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ \$now | Quote }}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            finishedAt: {{ \$now | Quote }}
            reason: Completed
            startedAt: {{ \$now | Quote }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Running
      startTime: {{ \$now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-crash-terminated
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
    - key: '$crash'
      operator: 'In'
      values: ['true']
  next:
    statusTemplate: |
      {{ \$now := Now }}
      conditions:
      - lastTransitionTime: {{ \$now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ \$now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: Ready
      - lastTransitionTime: {{ \$now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      {{ \$uri := "" }}{{ range .env }}{{ if eq .name "STORAGE_URI" }}{{ \$uri = .value }}{{ end }}{{ end }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: 1
            reason: Error
            message: {{ printf "could not load the model from %s: no such object (simulated by kwok)" \$uri | Quote }}
            startedAt: {{ \$now | Quote }}
            finishedAt: {{ \$now | Quote }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Running
      startTime: {{ \$now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-crash-backoff
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.containerStatuses[0].state.terminated.reason'
      operator: 'In'
      values: ['Error']
    - key: '$crash'
      operator: 'In'
      values: ['true']
  delay:
    durationMilliseconds: 2000
  next:
    statusTemplate: |
      {{ \$now := Now }}
      containerStatuses:
      {{ range .status.containerStatuses }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: false
        restartCount: 1
        lastState:
          terminated:
            exitCode: {{ .state.terminated.exitCode }}
            reason: {{ .state.terminated.reason | Quote }}
            message: {{ .state.terminated.message | Quote }}
            startedAt: {{ .state.terminated.startedAt | Quote }}
            finishedAt: {{ .state.terminated.finishedAt | Quote }}
        state:
          waiting:
            reason: CrashLoopBackOff
            message: {{ printf "back-off 10s restarting failed container=%s" .name | Quote }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-complete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.metadata.ownerReferences.[].kind'
      operator: 'In'
      values: ['Job']
  next:
    statusTemplate: |
      {{ \$now := Now }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 0
            finishedAt: {{ \$now | Quote }}
            reason: Completed
            startedAt: {{ \$now | Quote }}
      {{ end }}
      phase: Succeeded
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    finalizers:
      empty: true
    delete: true
EOF
}

# ---------------------------------------------------------------- processes
start() { # name cmd...
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$PIDS/$name.pid"
}

pid_of() { [ -f "$PIDS/$1.pid" ] && cat "$PIDS/$1.pid"; }
alive() { local p; p="$(pid_of "$1")" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

stop() { # name: TERM its process group, then KILL after 15s
  local p
  p="$(pid_of "$1")" || return 0
  [ -n "$p" ] || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$PIDS/$1.pid"
}

wait_for() { # description timeout-seconds component cmd...: poll until cmd succeeds
  local what=$1 timeout=$2 comp=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$comp" ] && ! alive "$comp"; then
      tail -n 30 "$LOGS/$comp.log" >&2 || true
      die "$comp exited while waiting for $what (log: $LOGS/$comp.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      [ -n "$comp" ] && { tail -n 30 "$LOGS/$comp.log" >&2 || true; }
      die "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.5
  done
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
  alive "$1" || return 1
  if [ "$1" = kube-apiserver ]; then api_get /readyz >/dev/null 2>&1; return; fi
  curl -fsSk --max-time 5 "$(health_url "$1")" >/dev/null 2>&1
}

load_env() { [ -f "$STATE_DIR/cluster.env" ] && . "$STATE_DIR/cluster.env"; }

all_healthy() {
  load_env || return 1
  local c
  for c in "${COMPONENTS[@]}"; do healthy "$c" || return 1; done
  "$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

node_ready() {
  "$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

# ---------------------------------------------------------------- commands
cmd_up() {
  local real_node=0
  for a in "$@"; do
    case "$a" in
      --real-node) real_node=1 ;;
      *) die "unknown flag $a (usage: up [--real-node])" ;;
    esac
  done
  ensure_tools
  if [ -f "$STATE_DIR/cluster.env" ] && all_healthy; then
    log "cluster already up ($APISERVER_URL)"
    maybe_real_node "$real_node"
    echo "$STATE_DIR/kubeconfig"
    return 0
  fi
  if [ -f "$STATE_DIR/cluster.env" ] || [ -d "$PIDS" ]; then
    log "stale state in $STATE_DIR: stopping leftovers and starting fresh"
    cmd_down >/dev/null
  fi
  local t0=$SECONDS
  mkdir -p "$STATE_DIR" "$LOGS" "$PIDS" "$KCFGS"
  read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHEDULER_PORT KWOK_PORT <<<"$(free_ports 6)"
  APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"
  cat > "$STATE_DIR/cluster.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
KWOK_PORT=$KWOK_PORT
APISERVER_URL=$APISERVER_URL
SERVICE_CIDR=$SERVICE_CIDR
KUBERNETES_SVC_IP=$KUBERNETES_SVC_IP
CLUSTER_DOMAIN=$CLUSTER_DOMAIN
BIN_DIR=$BIN_DIR
EOF
  make_pki
  write_kubeconfig "$STATE_DIR/kubeconfig" admin admin
  write_kubeconfig "$KCFGS/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "$KCFGS/scheduler.kubeconfig" system:kube-scheduler scheduler
  write_kubeconfig "$KCFGS/kwok.kubeconfig" kwok kwok
  write_audit_policy
  write_kwok_stages

  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  start etcd "$ETCD" --name local --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new --snapshot-count 10000
  wait_for "etcd health" 30 etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

  log "starting kube-apiserver on $APISERVER_URL"
  start kube-apiserver "$BIN_DIR/kube-apiserver" \
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
  wait_for "kube-apiserver /readyz" 120 kube-apiserver api_get /readyz

  log "starting kube-controller-manager, kube-scheduler"
  local kcm="$KCFGS/controller-manager.kubeconfig" sch="$KCFGS/scheduler.kubeconfig"
  # kwok's default node heartbeat comes every 20-45 s (+ processing), which can exceed the default
  # 50 s grace period: the node would flap NotReady and the node-lifecycle controller would mark
  # every pod NotReady for good (kwok only sets Ready once). A 5 min grace period keeps it steady.
  start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$kcm" --authentication-kubeconfig "$kcm" --authorization-kubeconfig "$kcm" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
    --controllers '*' --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --horizontal-pod-autoscaler-sync-period 5s \
    --horizontal-pod-autoscaler-downscale-stabilization 30s \
    --node-monitor-grace-period 5m
  start kube-scheduler "$BIN_DIR/kube-scheduler" \
    --kubeconfig "$sch" --authentication-kubeconfig "$sch" --authorization-kubeconfig "$sch" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false

  log "starting kwok (fake node $NODE_NAME)"
  start kwok "$BIN_DIR/kwok" --kubeconfig "$KCFGS/kwok.kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.244.0.0/17 --node-ip 10.0.0.1 \
    --server-address "127.0.0.1:$KWOK_PORT" \
    --config "$STATE_DIR/kwok-stages.yaml"
  "$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
spec: {}
EOF
  wait_for "kube-controller-manager /healthz" 60 kube-controller-manager healthy kube-controller-manager
  wait_for "kube-scheduler /healthz" 60 kube-scheduler healthy kube-scheduler
  wait_for "node $NODE_NAME Ready" 90 kwok node_ready
  wait_for "ServiceAccount default/default" 90 kube-controller-manager \
    "$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig" get serviceaccount default -n default
  log "control plane up in $((SECONDS - t0))s; logs in $LOGS"
  maybe_real_node "$real_node"
  echo "$STATE_DIR/kubeconfig"
}

maybe_real_node() {
  [ "$1" = 1 ] || return 0
  touch "$STATE_DIR/real-node"
  "$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig" taint node "$NODE_NAME" \
    kwok.x-k8s.io/node=fake:NoSchedule --overwrite >/dev/null
  if [ -x "$ROOT/hack/real-node.sh" ]; then
    log "starting the real node (hack/real-node.sh up $STATE_DIR)"
    "$ROOT/hack/real-node.sh" up "$STATE_DIR" >&2
  else
    log "--real-node given but hack/real-node.sh does not exist (yet); kwok node only"
  fi
}

cmd_down() {
  if [ ! -f "$STATE_DIR/cluster.env" ] && [ ! -d "$PIDS" ]; then
    log "nothing to stop (no cluster state in $STATE_DIR)"
    return 0
  fi
  if [ -x "$ROOT/hack/real-node.sh" ] && [ -f "$STATE_DIR/real-node" ]; then
    "$ROOT/hack/real-node.sh" down "$STATE_DIR" >&2 || log "hack/real-node.sh down failed"
  fi
  local i f
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${COMPONENTS[$i]}"; done
  # Only what `up` (and real-node.sh, under node/) made: other scripts keep files here too
  # (hack/demo.sh and hack/e2e-kind.sh put kind kubeconfigs in .local-cluster/).
  for f in "${OWNED[@]}"; do rm -rf "${STATE_DIR:?}/$f"; done
  rmdir "$STATE_DIR" 2>/dev/null || true
  log "stopped; removed the cluster's state from $STATE_DIR"
}

cmd_status() {
  if ! load_env; then echo "cluster: down (no $STATE_DIR/cluster.env)"; return 1; fi
  KUBECTL="$BIN_DIR/kubectl"
  local c rc=0 state
  for c in "${COMPONENTS[@]}"; do
    if healthy "$c"; then state="healthy"
    elif alive "$c"; then state="running, NOT healthy"; rc=1
    else state="NOT running"; rc=1
    fi
    printf '%-24s pid %-8s %-22s %s\n' "$c" "$(pid_of "$c" || echo -)" "$state" "$(health_url "$c")"
  done
  if node_ready; then printf '%-24s %s\n' "node/$NODE_NAME" Ready
  else printf '%-24s %s\n' "node/$NODE_NAME" "NOT Ready"; rc=1
  fi
  if [ -f "$STATE_DIR/real-node" ] && [ -x "$ROOT/hack/real-node.sh" ]; then
    "$ROOT/hack/real-node.sh" status "$STATE_DIR" || rc=1
  fi
  printf '%-24s %s\n' kubeconfig "$STATE_DIR/kubeconfig"
  printf '%-24s %s\n' logs "$LOGS"
  return $rc
}

cmd_env() {
  load_env || die "cluster is not up"
  cat "$STATE_DIR/cluster.env"
  echo "STATE_DIR=$STATE_DIR"
  echo "KUBECONFIG=$STATE_DIR/kubeconfig"
}

cmd_operator_kubeconfig() {
  load_env || die "cluster is not up (run: $0 up)"
  KUBECTL="$BIN_DIR/kubectl"
  local k=("$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig")
  [ -f "$ROOT/deploy/kustomization.yaml" ] || die "deploy/kustomization.yaml does not exist yet"
  # Only the identity and its permissions: the operator itself runs outside the cluster here.
  "${k[@]}" kustomize "$ROOT/deploy" > "$STATE_DIR/deploy-rendered.yaml"
  "${k[@]}" create --dry-run=client -o json -f "$STATE_DIR/deploy-rendered.yaml" \
    | jq '(if .kind == "List" then . else {apiVersion: "v1", kind: "List", items: [.]} end)
          | .items |= map(select(.kind as $k | ["Namespace", "ServiceAccount", "Role",
              "ClusterRole", "RoleBinding", "ClusterRoleBinding"] | index($k)))' \
    > "$STATE_DIR/deploy-rbac.json"
  "${k[@]}" apply --server-side --force-conflicts --field-manager local-cluster \
    -f "$STATE_DIR/deploy-rbac.json" >&2
  local ns=modeldeploy-system sa=modeldeploy-operator token
  wait_for "ServiceAccount $ns/$sa" 30 "" "${k[@]}" get serviceaccount "$sa" -n "$ns"
  token="$("${k[@]}" create token "$sa" -n "$ns" --duration 720h)"
  cat > "$STATE_DIR/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: modeldeploy-local
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $sa
  user:
    token: $token
contexts:
- name: $sa@modeldeploy-local
  context: {cluster: modeldeploy-local, user: $sa, namespace: $ns}
current-context: $sa@modeldeploy-local
EOF
  chmod 600 "$STATE_DIR/operator.kubeconfig"
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
