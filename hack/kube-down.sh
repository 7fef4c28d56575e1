#!/usr/bin/env bash
# Stops the local control plane started by hack/kube-up.sh and removes its
# state directory. Safe to run when nothing is running.
#
# The fakelet gets SIGTERM first so it can stop the pod processes it started.
# The rest is disposable and gets SIGKILL, clients before servers: SIGTERM
# to all at once leaves the apiserver and controller-manager retrying a dead
# etcd or apiserver for minutes, and even alone the apiserver takes seconds
# to drain.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run=${KUBE_RUN_DIR:-$root/.cache/kube/run}

# running PID: the process exists and is not a zombie (kube-up.sh calls this
# script on failure while the processes are still its unreaped children).
running() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# stop NAME SIGNAL GRACE_SECONDS: sends SIGNAL, and SIGKILL if the process
# is still there after GRACE_SECONDS.
stop() {
	local name=$1 sig=$2 grace=$3 pid
	pid=$(cat "$run/$name.pid" 2>/dev/null) || return 0
	# The pid must still be ours: after a reboot it may name another process.
	[[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$name" || return 0
	kill "-$sig" "$pid" 2>/dev/null || return 0
	for ((i = 0; i < grace * 10; i++)); do
		running "$pid" || return 0
		sleep 0.1
	done
	if [[ $sig != KILL ]]; then
		echo "kube-down: $name did not stop in ${grace}s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	for ((i = 0; i < 50; i++)); do
		running "$pid" || return 0
		sleep 0.1
	done
}

stop fakelet TERM 10
stop kube-controller-manager KILL 0
stop kube-apiserver KILL 0
stop etcd KILL 0
rm -rf "$run"
