#!/usr/bin/env bash
# Stops the stack of docker-compose.yml and removes everything it left:
# the session containers (found by label, since compose does not know
# them), the networks and the NATS volume, whose records would only
# describe sessions that are gone.
#
# Environment: see compose-env.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/compose-env.sh"

# The provisioner goes first so that it starts nothing new while the
# sessions are removed.
compose stop provisioner >/dev/null 2>&1 || true
ids=$(session_containers)
if [[ -n $ids ]]; then
	log "removing $(wc -w <<<"$ids") session container(s)"
	# shellcheck disable=SC2086 # one ID per word
	docker rm -f $ids >/dev/null
fi
compose down -v --remove-orphans
left=$(session_containers)
if [[ -n $left ]]; then
	log "session containers still present: $left"
	exit 1
fi
