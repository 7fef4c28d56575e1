#!/usr/bin/env bash
# End-to-end check of the local control plane: starts a separate cluster
# (own ports and run dir, so a running dev cluster is left alone), runs pods
# through the fakelet with a python http.server as the app, and checks
# readiness, HTTP on the pod IP, prompt deletion, garbage collection of an
# owned Service, exit codes, the simulated failures, and that kube-down
# leaves no process behind. Exits non-zero on the first failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export KUBE_RUN_DIR=$root/.cache/kube/smoke
export KUBE_APISERVER_PORT=${SMOKE_APISERVER_PORT:-26443}
export KUBE_ETCD_PORT=${SMOKE_ETCD_PORT:-22379}
export KUBE_ETCD_PEER_PORT=${SMOKE_ETCD_PEER_PORT:-22380}
# EXIT_CODE in a container's env makes the app exit at once, to test failures.
# shellcheck disable=SC2016 # expanded by the fakelet's shell, per container
export FAKELET_APP_COMMAND='if [ -n "$EXIT_CODE" ]; then exit "$EXIT_CODE"; fi; exec python3 -m http.server "$PORT" --bind "$HOST"'
kubectl=$root/.cache/kube/bin/kubectl

step() { echo "--- $*"; }
# since T0: seconds elapsed since the $EPOCHREALTIME value T0.
since() {
	local ms=$(((${EPOCHREALTIME/./} - ${1/./}) / 1000))
	printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}
die() {
	echo "FAIL: $*" >&2
	exit 1
}
trap '"$root/hack/kube-down.sh"' EXIT

step "kube-up"
t0=$EPOCHREALTIME
KUBECONFIG=$("$root/hack/kube-up.sh")
export KUBECONFIG
echo "kube-up took $(since "$t0")s; kubeconfig $KUBECONFIG"
"$kubectl" get nodes
[[ $("$kubectl" get node fakelet -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]] ||
	die "node not Ready"

# pod NAME [ANNOTATION] [EXIT_CODE]: creates a Spawner-managed pod.
pod() {
	"$kubectl" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  labels: {app.kubernetes.io/managed-by: spawner}
  annotations: {fakelet.spawner.dev/simulate: "${2:-}"}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: example.invalid/app:1
    ports: [{containerPort: 8080}]
    env: [{name: EXIT_CODE, value: "${3:-}"}]
EOF
}
jp() { "$kubectl" get pod "$1" -o "jsonpath=$2"; }
# eventually SECONDS CMD...: retries CMD every 0.2s.
eventually() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

step "a Spawner pod becomes Ready and serves HTTP on its pod IP"
t0=$EPOCHREALTIME
pod web
"$kubectl" wait --for=condition=Ready pod/web --timeout=30s >/dev/null
echo "ready in $(since "$t0")s"
ip=$(jp web '{.status.podIP}')
[[ $ip == 127.* ]] || die "pod IP $ip is not loopback"
curl -fsS -o /dev/null "http://$ip:8080/" || die "no HTTP answer on $ip:8080"
pid=$(pgrep -f "http.server 8080 --bind $ip") || die "no app process for $ip"
echo "pod IP $ip, app pid $pid"

step "an owned Service is garbage-collected after the pod is deleted"
uid=$(jp web '{.metadata.uid}')
"$kubectl" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: web
  ownerReferences: [{apiVersion: v1, kind: Pod, name: web, uid: $uid}]
spec:
  selector: {app: web}
  ports: [{port: 8080}]
EOF
t0=$EPOCHREALTIME
"$kubectl" delete pod web --timeout=20s >/dev/null
echo "kubectl delete pod took $(since "$t0")s"
! kill -0 "$pid" 2>/dev/null || die "app process $pid survived the pod"
eventually 30 bash -c '! "$0" get service web >/dev/null 2>&1' "$kubectl" || die "service web was not collected"
echo "service collected"

step "an app that exits fails the pod with its exit code"
pod crash "" 3
eventually 15 bash -c '[[ $("$0" get pod crash -o jsonpath={.status.phase}) == Failed ]]' "$kubectl" || die "pod crash not Failed"
[[ $(jp crash '{.status.containerStatuses[0].state.terminated.exitCode}') == 3 ]] || die "wrong exit code"

step "simulated failures"
pod pull ImagePullBackOff
pod loop CrashLoopBackOff
pod nosched Unschedulable
eventually 10 bash -c '[[ $("$0" get pod pull -o jsonpath={.status.containerStatuses[0].state.waiting.reason}) == ImagePullBackOff ]]' "$kubectl" ||
	die "pull: $(jp pull '{.status}')"
eventually 10 bash -c '[[ $("$0" get pod loop -o jsonpath={.status.containerStatuses[0].state.waiting.reason}) == CrashLoopBackOff ]]' "$kubectl" ||
	die "loop: $(jp loop '{.status}')"
eventually 10 bash -c '[[ $("$0" get pod nosched -o "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}") == Unschedulable ]]' "$kubectl" ||
	die "nosched: $(jp nosched '{.status}')"
"$kubectl" get pods -o wide
"$kubectl" delete pod pull loop nosched crash --timeout=20s >/dev/null

step "kube-down leaves no process behind"
pod web2
"$kubectl" wait --for=condition=Ready pod/web2 --timeout=30s >/dev/null
trap - EXIT
t0=$EPOCHREALTIME
"$root/hack/kube-down.sh"
echo "kube-down took $(since "$t0")s"
if pgrep -f "$KUBE_RUN_DIR|http.server 8080" >/dev/null; then
	pgrep -af "$KUBE_RUN_DIR|http.server 8080" >&2
	die "processes left behind"
fi
echo "smoke test passed"
