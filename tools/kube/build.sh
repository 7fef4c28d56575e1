#!/usr/bin/env bash
# Builds the local control plane into .cache/kube/bin at the repository root:
# etcd, kube-apiserver, kube-controller-manager, kubectl and fakelet.
#
# Each binary is rebuilt only when it is missing or older than the files it
# is built from, so running this again is cheap (well under a second). A cold
# build of the Kubernetes binaries takes several minutes and ~3 GB of memory
# on two cores; KUBE_BUILD_P sets go build's parallelism (default 2).
#
# Progress goes to stderr; stdout stays empty so callers can capture theirs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${KUBE_BIN_DIR:-$root/.cache/kube/bin}
par=${KUBE_BUILD_P:-2}

mkdir -p "$bin"
# Concurrent callers (parallel test packages, make targets) wait for one build
# instead of racing on the same outputs.
exec 9>"$bin/.build.lock"
flock 9

log() { echo "kube build: $*" >&2; }

# stale OUT INPUT...: true when OUT is missing or any input file is newer.
stale() {
	local out=$1
	shift
	[[ -x $out ]] || return 0
	[[ -n $(find "$@" -type f -newer "$out" -print -quit) ]]
}

# build DIR LDFLAGS PKG...: builds the packages of the module in DIR into a
# scratch folder, then moves them into place, so an interrupted build never
# leaves a truncated binary that looks up to date.
build() {
	local dir=$1 ldflags=$2
	shift 2
	local tmp
	tmp=$(mktemp -d "$bin/.tmp.XXXXXX")
	# shellcheck disable=SC2064 # expand tmp now, the trap outlives this scope
	trap "rm -rf '$tmp'" EXIT
	(cd "$dir" && go build -p "$par" -trimpath -ldflags "$ldflags" -o "$tmp/" "$@")
	for f in "$tmp"/*; do
		touch "$f" # go build may reuse an old file's mtime for a cached link
		mv -f "$f" "$bin/"
	done
	rm -rf "$tmp"
	trap - EXIT
}

k8s_bins=(kube-apiserver kube-controller-manager kubectl)
need_k8s=false
for b in "${k8s_bins[@]}"; do
	if stale "$bin/$b" "$here/go.mod" "$here/go.sum"; then
		need_k8s=true
	fi
done
if $need_k8s; then
	# Stamp the release into the binaries; without it they report
	# v0.0.0-master and clients warn about version skew.
	version=$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
	minor=${version#v1.}
	minor=${minor%%.*}
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	log "building ${k8s_bins[*]} $version (cold: several minutes)"
	start=$SECONDS
	build "$here" "$ldflags" "${k8s_bins[@]/#/k8s.io/kubernetes/cmd/}"
	log "built ${k8s_bins[*]} in $((SECONDS - start))s"
fi

if stale "$bin/etcd" "$here/etcd"; then
	log "building etcd"
	start=$SECONDS
	build "$here/etcd" "-s -w" .
	log "built etcd in $((SECONDS - start))s"
fi

if stale "$bin/fakelet" "$here/go.mod" "$here/go.sum" "$here/cmd/fakelet"; then
	log "building fakelet"
	start=$SECONDS
	build "$here" "-s -w" ./cmd/fakelet
	log "built fakelet in $((SECONDS - start))s"
fi
