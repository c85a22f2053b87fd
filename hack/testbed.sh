#!/usr/bin/env bash
# The local test bed: a real Kubernetes control plane with fake nodes, and Prometheus, on loopback.
#
#   hack/testbed.sh up       build or reuse binaries, start everything, wait until healthy (idempotent)
#   hack/testbed.sh down     stop exactly the processes this test bed started, remove its state
#   hack/testbed.sh env      print shell exports for KUBECONFIG and the Prometheus URL
#   hack/testbed.sh status   say what runs
#   hack/testbed.sh prometheus stop|start, apiserver restart, etcd restart   outage drills
#
# Everything lives in $GUARDED_TESTBED_DIR (default: .testbed/ in the checkout). Every process
# started here is recorded in pids/, and each has that directory in its command line, so a
# crashed earlier run is found and cleaned before a new one starts.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
source "$HERE/versions.sh"

RUN="${GUARDED_TESTBED_DIR:-$ROOT/.testbed}"
RUN="${RUN%/}"   # "$RUN.lock" must sit beside the directory, never in it
ETCD_PORT="${GUARDED_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${GUARDED_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${GUARDED_APISERVER_PORT:-16443}"
KCM_PORT="${GUARDED_KCM_PORT:-20257}"
SCHED_PORT="${GUARDED_SCHEDULER_PORT:-20259}"
KWOK_PORT="${GUARDED_KWOK_PORT:-20260}"
PROM_PORT="${GUARDED_PROMETHEUS_PORT:-19090}"
SIM_PORT="${GUARDED_SIM_PORT:-19100}"
NODES="${GUARDED_TESTBED_NODES:-4}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_alive() { # a recorded process that runs: not gone, and not a zombie whose every thread has exited (a killed
  # multi-threaded process's leader shows Z while its other threads still hold its ports and files)
  [[ -f "$RUN/pids/$1.pid" ]] || return 1
  local pid state threads
  pid="$(cat "$RUN/pids/$1.pid")"
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
  threads="$(ls "/proc/$pid/task" 2>/dev/null | wc -l)"
  [[ -n "$state" && ( "$state" != Z || "$threads" -gt 1 ) ]]
}

ports_free() { # ports_free PORT...: back once none of them is listened on (20 s at most)
  local port
  local taken
  for _ in $(seq 1 80); do
    taken=""
    for port in "$@"; do ss -ltnH "sport = :$port" 2>/dev/null | grep -q . && taken="$port"; done
    [[ -z "$taken" ]] && return 0
    sleep 0.25
  done
  die "port $taken still taken 20 s after its process ended"
}

stop_process() { # stop_process NAME [SECONDS]: SIGTERM, SIGKILL after SECONDS (default 5), back once it is gone
  pid_alive "$1" || return 0
  local pid ticks=$(( ${2:-5} * 4 ))
  pid="$(cat "$RUN/pids/$1.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$ticks"); do pid_alive "$1" || return 0; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 80); do pid_alive "$1" || return 0; sleep 0.25; done
  die "$1 (pid $pid) did not end after SIGKILL"
}

api_ok() {
  curl -sf --max-time 3 --cacert "$RUN/pki/apiserver-ca.crt" -H "Authorization: Bearer $(cat "$RUN/tokens/admin")" \
    "https://127.0.0.1:$APISERVER_PORT$1" >/dev/null 2>&1
}
prom_ok() { curl -sf --max-time 3 "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1; }

kubectl_admin() { "$KUBE_BIN_DIR/kubectl" --kubeconfig "$RUN/kubeconfig" --context guarded-admin "$@"; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local limit="$1" what="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS > deadline)); then log "timed out after ${limit}s waiting for $what"; show_logs; exit 1; fi
    sleep 0.5
  done
}

show_logs() {
  for f in "$RUN"/logs/*.log; do
    [[ -f "$f" ]] || continue
    log "---- last lines of $f"; tail -n 25 "$f" >&2 || true
  done
}

start() { # start NAME COMMAND... : run detached, record the PID, log to logs/NAME.log
  local name="$1"; shift
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 < /dev/null 9>&- &  # 9: the lock of `up`, not theirs to hold
  echo $! > "$RUN/pids/$name.pid"
}

running_complete() {
  for p in etcd kube-apiserver kube-controller-manager kube-scheduler kwok prometheus traffic-sim; do
    pid_alive "$p" || return 1
  done
  api_ok /readyz && prom_ok
}

ensure_prometheus() {
  if command -v prometheus >/dev/null 2>&1; then return; fi
  log "installing Prometheus from the Debian package"
  export DEBIAN_FRONTEND=noninteractive
  local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v prometheus >/dev/null 2>&1 || die "prometheus still missing after apt-get install"
}

make_pki() {
  mkdir -p "$RUN/pki" "$RUN/tokens"
  openssl genrsa -out "$RUN/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$RUN/pki/sa.key" -pubout -out "$RUN/pki/sa.pub" 2>/dev/null
  # A CA of our own, and a serving certificate for 127.0.0.1 signed by it, so clients verify TLS.
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=guarded-testbed-ca" \
    -keyout "$RUN/pki/apiserver-ca.key" -out "$RUN/pki/apiserver-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$RUN/pki/apiserver.key" -out "$RUN/pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > "$RUN/pki/ext.cnf"
  openssl x509 -req -in "$RUN/pki/apiserver.csr" -CA "$RUN/pki/apiserver-ca.crt" -CAkey "$RUN/pki/apiserver-ca.key" \
    -CAcreateserial -days 3650 -extfile "$RUN/pki/ext.cnf" -out "$RUN/pki/apiserver.crt" 2>/dev/null
  # Static token users: who is who is decided by the API server, as in a real cluster.
  local users=(
    'admin|admin|system:masters'
    'alice|alice|engineers'
    'bob|bob|engineers'
    'carol|carol|engineers,senior-engineers'
    'dave|dave|engineers'
    # The operator's user is its ServiceAccount's name, so that RBAC and the admission policies trust
    # exactly the identity they trust in a cluster (manifests/base), and no plain user name besides.
    'operator|system:serviceaccount:guarded-rollouts:guarded-operator|system:serviceaccounts,system:serviceaccounts:guarded-rollouts'
  )
  : > "$RUN/pki/tokens.csv"
  for entry in "${users[@]}"; do
    IFS='|' read -r key user groups <<<"$entry"
    local token; token="$(openssl rand -hex 24)"
    echo "$token" > "$RUN/tokens/$key"
    echo "$token,$user,uid-$user,\"$groups\"" >> "$RUN/pki/tokens.csv"
  done
}

write_kubeconfig() {
  local ca; ca="$(base64 -w0 < "$RUN/pki/apiserver-ca.crt")"
  {
    echo "apiVersion: v1"
    echo "kind: Config"
    echo "clusters:"
    echo "- name: guarded-testbed"
    echo "  cluster:"
    echo "    server: https://127.0.0.1:$APISERVER_PORT"
    echo "    certificate-authority-data: $ca"
    echo "users:"
    for key in admin alice bob carol dave operator; do
      echo "- name: $key"
      echo "  user:"
      echo "    token: $(cat "$RUN/tokens/$key")"
    done
    echo "contexts:"
    for key in admin alice bob carol dave operator; do
      echo "- name: guarded-$key"
      echo "  context: {cluster: guarded-testbed, user: $key}"
    done
    echo "current-context: guarded-admin"
  } > "$RUN/kubeconfig"
  chmod 600 "$RUN/kubeconfig"
}

write_prometheus_config() {
  mkdir -p "$RUN/prometheus/targets" "$RUN/prometheus/rules" "$RUN/prometheus/data"
  cat > "$RUN/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $RUN/prometheus/rules/*.yml
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:$PROM_PORT']
  # Tests and the demo add targets by dropping JSON files here (file-based service discovery).
  - job_name: testbed
    file_sd_configs:
      - files: ['$RUN/prometheus/targets/*.json']
        refresh_interval: 1s
EOF
}

create_nodes() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "250"}
  capacity: {cpu: "64", memory: 256Gi, pods: "250"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake}
---
EOF
  done | kubectl_admin apply -f - >/dev/null
}

nodes_ready() {
  local ready
  ready="$(kubectl_admin get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)"
  [[ "$ready" -ge "$NODES" ]]
}
default_sa_ready() { kubectl_admin -n default get serviceaccount default >/dev/null 2>&1; }

cmd_down() {
  local stopped=0
  if [[ -d "$RUN/pids" ]]; then
    for f in "$RUN"/pids/*.pid; do
      [[ -f "$f" ]] || continue
      local pid; pid="$(cat "$f")"
      if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; stopped=$((stopped + 1)); fi
    done
    for _ in $(seq 1 40); do
      local alive=0
      for f in "$RUN"/pids/*.pid; do [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.25
    done
    for f in "$RUN"/pids/*.pid; do [[ -f "$f" ]] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
  fi
  # Processes of a crashed run whose PID files were lost: each carries $RUN in its arguments.
  if pgrep -f -- "$RUN/" >/dev/null 2>&1; then
    pkill -KILL -f -- "$RUN/" 2>/dev/null || true
    stopped=$((stopped + 1))
  fi
  rm -rf "$RUN"
  log "down: stopped $stopped process(es), removed $RUN"
}

cmd_up() {
  if [[ -d "$RUN" ]] && running_complete; then
    log "already running in $RUN"
    install_gateway_api
    refresh_simulator
    print_summary
    return
  fi
  if [[ -d "$RUN" ]]; then log "found an incomplete or crashed test bed in $RUN; cleaning it"; fi
  cmd_down >/dev/null 2>&1 || true

  "$HERE/build-binaries.sh" all
  ensure_prometheus
  [[ -x "$PYTHON" ]] || die "no Python environment at $PYTHON for the traffic simulator: run 'make venv' first"
  for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHED_PORT" "$KWOK_PORT" "$PROM_PORT" \
      "$SIM_PORT"; do
    if ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
      die "port $port on 127.0.0.1 is taken by a process that is not this test bed's (set GUARDED_*_PORT to move)"
    fi
  done

  mkdir -p "$RUN"/{pids,logs,etcd}
  make_pki
  write_kubeconfig
  write_prometheus_config
  local t0=$SECONDS

  start_etcd

  start_apiserver
  wait_for 90 "the API server's /readyz" api_ok /readyz

  start kube-controller-manager "$KUBE_BIN_DIR/kube-controller-manager" \
    --kubeconfig "$RUN/kubeconfig" --authentication-kubeconfig "$RUN/kubeconfig" --authorization-kubeconfig "$RUN/kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --controllers '*' --service-account-private-key-file "$RUN/pki/sa.key" --root-ca-file "$RUN/pki/apiserver-ca.crt" \
    --authorization-always-allow-paths /healthz,/readyz,/livez,/metrics \
    --node-monitor-grace-period 120s \
    --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 --kube-api-qps 100 --kube-api-burst 200 \
    --v=1
  start kube-scheduler "$KUBE_BIN_DIR/kube-scheduler" \
    --kubeconfig "$RUN/kubeconfig" --authentication-kubeconfig "$RUN/kubeconfig" --authorization-kubeconfig "$RUN/kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
    --authorization-always-allow-paths /healthz,/readyz,/livez,/metrics \
    --kube-api-qps 100 --kube-api-burst 200 \
    --v=1
  start kwok "$KWOK_BIN_DIR/kwok" \
    --kubeconfig "$RUN/kubeconfig" --manage-all-nodes=true \
    --server-address "127.0.0.1:$KWOK_PORT" --cidr 10.244.0.1/16 --node-ip 10.0.0.1 \
    --node-lease-duration-seconds 40
  start_prometheus

  create_nodes
  wait_for 90 "$NODES Ready kwok nodes" nodes_ready
  wait_for 90 "the default ServiceAccount" default_sa_ready
  wait_for 60 "Prometheus" prom_ok
  # The traffic simulator: per-pod request, error, order and latency series for pods that opt in
  # (annotation sim.guarded.dev/enabled), scraped by Prometheus. The operator never talks to it.
  install_gateway_api
  start_simulator
  printf '[{"targets": ["127.0.0.1:%s"], "labels": {"source": "traffic-sim"}}]\n' "$SIM_PORT" \
    > "$RUN/prometheus/targets/traffic-sim.json"
  log "up in $((SECONDS - t0))s"
  print_summary
}

# The Gateway API's standard CRDs (hack/gateway-api.sh pins the release): HTTPRoutes whose weights the
# simulator honours. Applied on every `up` (server-side, idempotent), so a running test bed gets them too.
install_gateway_api() {
  local dir
  dir="$("$HERE/gateway-api.sh" dir)"
  kubectl_admin apply --server-side --force-conflicts -f "$dir" >/dev/null
  kubectl_admin wait --for condition=Established --timeout 60s crd/httproutes.gateway.networking.k8s.io >/dev/null
}

sim_code() { cat "$ROOT"/operator/guarded/sim/*.py | sha256sum | cut -d' ' -f1; }

start_simulator() {
  start traffic-sim "$PYTHON" -m guarded.sim.main --kubeconfig "$RUN/kubeconfig" --context guarded-admin \
    --listen 127.0.0.1 --port "$SIM_PORT" --seed 1
  sim_code > "$RUN/traffic-sim.code"
  wait_for 60 "the traffic simulator" curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$SIM_PORT/healthz"
}

# A running test bed whose simulator runs older code than the checkout's gets the new one (its counters start
# again from zero, which Prometheus's rate() and increase() take as a counter reset).
refresh_simulator() {
  [[ "$(cat "$RUN/traffic-sim.code" 2>/dev/null)" == "$(sim_code)" ]] && return
  log "the traffic simulator's code changed: restarting it"
  stop_process traffic-sim 10
  start_simulator
}

start_etcd() {
  start etcd "$ETCD_BIN_DIR/etcd" --name testbed --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "testbed=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --quota-backend-bytes 4294967296 \
    --log-level warn
  wait_for 30 etcd curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  start kube-apiserver "$KUBE_BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$RUN/pki/apiserver.crt" --tls-private-key-file "$RUN/pki/apiserver.key" \
    --cert-dir "$RUN/pki/generated" \
    --token-auth-file "$RUN/pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$RUN/pki/sa.pub" \
    --service-account-signing-key-file "$RUN/pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --endpoint-reconciler-type none \
    --enable-priority-and-fairness=false \
    --allow-privileged=true \
    --profiling=false \
    --v=1
}

start_prometheus() {
  start prometheus prometheus --config.file "$RUN/prometheus/prometheus.yml" \
    --storage.tsdb.path "$RUN/prometheus/data" --web.listen-address "127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle --storage.tsdb.retention.time 1d --log.level warn
}

# Outage drills: stop Prometheus (keeping its data) and start it again.
cmd_prometheus() {
  case "${1:-}" in
    stop)
      stop_process prometheus 10
      log "prometheus stopped" ;;
    start)
      pid_alive prometheus || start_prometheus
      wait_for 60 "Prometheus" prom_ok
      log "prometheus started" ;;
    *) die "usage: $0 prometheus stop|start" ;;
  esac
}

# Control-plane drills (bench/chaos): restart the API server with the same flags, state kept in etcd
# (SIGTERM, SIGKILL after 5 s: it drains long-running watches for longer than a drill wants to wait).
cmd_apiserver() {
  case "${1:-}" in
    restart)
      stop_process kube-apiserver 5
      ports_free "$APISERVER_PORT"
      start_apiserver
      wait_for 90 "the API server's /readyz" api_ok /readyz
      log "kube-apiserver restarted" ;;
    *) die "usage: $0 apiserver restart" ;;
  esac
}

# etcd restarted under a running API server (SIGTERM, SIGKILL after 5 s; data kept): the API server's
# requests fail until it is back, and its watches resume from their resourceVersions.
cmd_etcd() {
  case "${1:-}" in
    restart)
      stop_process etcd 5
      ports_free "$ETCD_PORT" "$ETCD_PEER_PORT"
      start_etcd
      wait_for 90 "the API server's /readyz" api_ok /readyz
      log "etcd restarted" ;;
    *) die "usage: $0 etcd restart" ;;
  esac
}

print_summary() {
  log "kubeconfig:     $RUN/kubeconfig (contexts guarded-admin, guarded-alice, guarded-bob, guarded-carol, guarded-dave, guarded-operator)"
  log "prometheus:     http://127.0.0.1:$PROM_PORT"
  log "kubectl:        $KUBE_BIN_DIR/kubectl"
  log "scrape targets: $RUN/prometheus/targets/*.json   alert rules: $RUN/prometheus/rules/*.yml"
  log "simulator:      http://127.0.0.1:$SIM_PORT/metrics"
  write_env_file
}

write_env_file() {
  # Written beside and renamed into place: a reader (a test worker's connect) never sees a half-written file.
  cat > "$RUN/env.tmp.$$" <<EOF
export KUBECONFIG=$RUN/kubeconfig
export GUARDED_TESTBED_DIR=$RUN
export GUARDED_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT
export GUARDED_SIM_URL=http://127.0.0.1:$SIM_PORT
export GUARDED_KUBECTL=$KUBE_BIN_DIR/kubectl
export PATH=$KUBE_BIN_DIR:\$PATH
EOF
  mv -f "$RUN/env.tmp.$$" "$RUN/env"
}

cmd_env() {
  [[ -f "$RUN/env" ]] || die "no test bed in $RUN; run: $0 up"
  cat "$RUN/env"
}

cmd_status() {
  for p in etcd kube-apiserver kube-controller-manager kube-scheduler kwok prometheus traffic-sim; do
    if pid_alive "$p"; then echo "$p running (pid $(cat "$RUN/pids/$p.pid"))"; else echo "$p not running"; fi
  done
}

# `up` runs one at a time: make test's test workers each call it as they start, beside one another.
locked_up() {
  mkdir -p "$(dirname "$RUN")"
  exec 9>"$RUN.lock"
  flock 9
  cmd_up
}

case "${1:-}" in
  up) locked_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  prometheus) cmd_prometheus "${2:-}" ;;
  apiserver) cmd_apiserver "${2:-}" ;;
  etcd) cmd_etcd "${2:-}" ;;
  *) echo "usage: $0 up|down|env|status|prometheus stop|start|apiserver restart|etcd restart" >&2; exit 2 ;;
esac
