#!/usr/bin/env bash
# Starts docker-compose.yml detached and waits until the gateway's /readyz
# answers. It needs the images spawner:latest and spawner-demo:latest ("make
# compose-up" builds them first) and pulls nothing.
#
# Environment: see compose-env.sh, and
#   COMPOSE_UP_TIMEOUT  [90] seconds to wait for /readyz
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/compose-env.sh"
timeout=${COMPOSE_UP_TIMEOUT:-90}

for image in spawner:latest "${SPAWNER_APPLICATION_IMAGE:-spawner-demo:latest}"; do
	if ! docker image inspect "$image" >/dev/null 2>&1; then
		log "image $image is not on the engine; run 'make images' first"
		exit 1
	fi
done

log "starting project $COMPOSE_PROJECT_NAME on 127.0.0.1:$SPAWNER_COMPOSE_PORT"
compose up -d --no-build

url=http://127.0.0.1:$SPAWNER_COMPOSE_PORT/readyz
deadline=$((SECONDS + timeout))
until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
	if ((SECONDS >= deadline)); then
		log "$url did not answer within ${timeout}s"
		compose ps >&2 || true
		compose logs --tail=30 >&2 || true
		exit 1
	fi
	sleep 0.5
done
log "ready: $SPAWNER_PUBLIC_URL"
