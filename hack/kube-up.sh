#!/usr/bin/env bash
# Starts a local Kubernetes control plane for development and tests: etcd,
# kube-apiserver, kube-controller-manager and the fakelet (a simulated
# kubelet that runs Spawner's pods as local processes), all in the background
# with their state under .cache/kube/run/. Builds them first if needed (see
# tools/kube/build.sh).
#
# Prints the absolute path of the admin kubeconfig as its last line of stdout;
# everything else goes to stderr. If the cluster is already up it only prints
# that path: the settings below take effect when it starts, so run
# hack/kube-down.sh first to change them (or to pick up rebuilt binaries).
#
# Environment:
#   KUBE_APISERVER_PORT  apiserver port on 127.0.0.1 (default 16443)
#   KUBE_ETCD_PORT       etcd client port (default 12379)
#   KUBE_ETCD_PEER_PORT  etcd peer port (default 12380)
#   KUBE_RUN_DIR         state directory (default .cache/kube/run)
#   KUBE_UP_TIMEOUT      seconds to wait for each stage (default 60)
#   SPAWNER_BIN          spawner binary the fakelet runs (default bin/spawner)
#   FAKELET_APP_COMMAND  shell command for app containers, e.g.
#                        'python3 -m http.server $PORT --bind $HOST'
#   FAKELET_ARGS         extra fakelet flags, split on spaces
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The fakelet runs each session pod's app with this checkout's spawner, so
# build it unless the caller named one; an up-to-date build takes a moment.
if [[ -z ${SPAWNER_BIN:-} ]]; then
	(cd "$root" && CGO_ENABLED=0 go build -trimpath -o bin/spawner ./cmd/spawner) >&2
fi
bin=${KUBE_BIN_DIR:-$root/.cache/kube/bin}
run=${KUBE_RUN_DIR:-$root/.cache/kube/run}
api_port=${KUBE_APISERVER_PORT:-16443}
etcd_port=${KUBE_ETCD_PORT:-12379}
etcd_peer_port=${KUBE_ETCD_PEER_PORT:-12380}
timeout=${KUBE_UP_TIMEOUT:-60}
kubeconfig=$run/kubeconfig
node=fakelet
# Started in this order, stopped in the reverse one by kube-down.sh.
components=(etcd kube-apiserver kube-controller-manager fakelet)

log() { echo "kube-up: $*" >&2; }

kctl() { "$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s "$@"; }

readyz() { [[ $(kctl get --raw /readyz 2>/dev/null) == ok ]]; }

node_ready() {
	[[ $(kctl get node "$node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# alive NAME: the component's recorded process is still running.
alive() {
	local pid
	pid=$(cat "$run/$1.pid" 2>/dev/null) || return 1
	[[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1"
}

# Callers starting at once (parallel test packages) queue here; the later
# ones then find the cluster up. The lock sits beside the run dir, which
# kube-down.sh deletes, and the started components must not inherit it.
mkdir -p "$(dirname "$run")"
exec 8>"$run.lock"
flock 8

if [[ -f $kubeconfig ]]; then
	up=true
	for c in "${components[@]}"; do alive "$c" || up=false; done
	if $up && readyz; then
		echo "$kubeconfig"
		exit 0
	fi
	log "found a stale or partial cluster in $run; cleaning it up"
fi
if [[ -d $run ]]; then
	"$root/hack/kube-down.sh" >&2
fi

"$root/tools/kube/build.sh"

for port in "$api_port" "$etcd_port" "$etcd_peer_port"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		log "port $port on 127.0.0.1 is taken; set KUBE_APISERVER_PORT/KUBE_ETCD_PORT/KUBE_ETCD_PEER_PORT"
		exit 1
	fi
done

mkdir -p "$run/pki" "$run/logs" "$run/pods"
pki=$run/pki

# Credentials are made fresh for every cluster and never leave the run dir.
# P-256 keys are generated instantly, unlike RSA.
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
	-subj "/CN=spawner-local-ca" -keyout "$pki/ca.key" -out "$pki/ca.crt"
openssl_quiet req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-subj "/CN=kube-apiserver" -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr"
printf '%s\n' \
	"subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
	"extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature" >"$pki/apiserver.ext"
openssl_quiet x509 -req -days 3650 -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
	-CAcreateserial -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt"
# The service-account key signs the tokens the apiserver issues and the
# controller-manager's token controller uses the same one.
openssl_quiet genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/sa.key"
openssl_quiet pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
chmod 600 "$pki"/*.key

token=$(openssl rand -hex 24)
# The admin user is in system:masters, which RBAC lets do anything; the
# controller-manager and the fakelet use it too.
echo "$token,admin,admin,system:masters" >"$run/tokens.csv"
chmod 600 "$run/tokens.csv"
umask 077
cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: spawner-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: spawner-local
  context:
    cluster: spawner-local
    user: admin
    namespace: default
current-context: spawner-local
EOF
umask 022

# start NAME ARGS...: runs the binary NAME under setsid, detached from
# the caller's terminal and pipes, logging to logs/NAME.log.
start() {
	local name=$1
	shift
	setsid "$bin/$name" "$@" </dev/null >"$run/logs/$name.log" 2>&1 8>&- &
	echo $! >"$run/$name.pid"
}

fail() {
	log "$*"
	for c in "${components[@]}"; do
		if [[ -f $run/logs/$c.log ]]; then
			log "--- last lines of $run/logs/$c.log"
			tail -n 20 "$run/logs/$c.log" >&2
		fi
	done
	"$root/hack/kube-down.sh" >&2 || true
	exit 1
}

# wait_for WHAT COMPONENTS CMD...: polls CMD until it succeeds, failing early
# if one of the components it depends on has died.
wait_for() {
	local what=$1 deps=$2 deadline=$((SECONDS + timeout))
	shift 2
	until "$@" >/dev/null 2>&1; do
		for c in $deps; do alive "$c" || fail "$c exited while waiting for $what"; done
		((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
		sleep 0.2
	done
}

begin=$EPOCHREALTIME
elapsed() {
	local us=$((${EPOCHREALTIME/./} - ${begin/./}))
	echo "$((us / 1000000)).$((us / 100000 % 10))"
}
# No fsync: the cluster is disposable, and fsync dominates etcd's latency.
start etcd --name spawner-local --data-dir "$run/etcd" \
	--listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
	--listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
	--initial-cluster "spawner-local=http://127.0.0.1:$etcd_peer_port" \
	--unsafe-no-fsync --log-level warn

# endpoint-reconciler none: with a loopback advertise address the default
# reconciler fails, and nothing here needs the kubernetes Service endpoints.
start kube-apiserver \
	--etcd-servers "http://127.0.0.1:$etcd_port" \
	--bind-address 127.0.0.1 --secure-port "$api_port" --advertise-address 127.0.0.1 \
	--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
	--cert-dir "$pki" \
	--token-auth-file "$run/tokens.csv" \
	--authorization-mode RBAC,Node \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
	--service-cluster-ip-range 10.96.0.0/16 \
	--endpoint-reconciler-type none \
	--allow-privileged \
	--profiling=false

wait_for "kube-apiserver /readyz" "etcd kube-apiserver" readyz
log "kube-apiserver ready after $(elapsed)s"

# Controllers that cannot work here are off: there is no node health to
# watch (the fakelet is the node), no pod CIDRs to hand out, and Endpoints/
# EndpointSlices reject the loopback pod IPs the fakelet assigns.
start kube-controller-manager \
	--kubeconfig "$kubeconfig" \
	--secure-port 0 \
	--leader-elect=false \
	--use-service-account-credentials=false \
	--service-account-private-key-file "$pki/sa.key" \
	--root-ca-file "$pki/ca.crt" \
	--controllers '*,-node-lifecycle-controller,-node-ipam-controller,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller' \
	--profiling=false

fakelet_args=(--kubeconfig "$kubeconfig" --node-name "$node" --log-dir "$run/pods"
	--spawner-bin "${SPAWNER_BIN:-$root/bin/spawner}")
if [[ -n ${FAKELET_APP_COMMAND:-} ]]; then
	fakelet_args+=(--app-command "$FAKELET_APP_COMMAND")
fi
# shellcheck disable=SC2206 # word splitting is the documented interface
fakelet_args+=(${FAKELET_ARGS:-})
start fakelet "${fakelet_args[@]}"

wait_for "the default ServiceAccount" "kube-apiserver kube-controller-manager" \
	kctl get serviceaccount default --namespace default
wait_for "node $node to be Ready" "kube-apiserver fakelet" node_ready
log "cluster ready after $(elapsed)s; kubectl is $bin/kubectl"

echo "$kubeconfig"
