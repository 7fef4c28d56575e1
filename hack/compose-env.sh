# Sourced by the compose-*.sh scripts: the settings they share and a
# "compose" function that runs whichever Compose this machine has, the
# "docker compose" plugin or the standalone docker-compose.
#
# Environment (defaults in brackets):
#   COMPOSE_PROJECT_NAME    [spawner] the stack's name; tests use their own
#   SPAWNER_COMPOSE_PORT    [8080] the gateway's port on 127.0.0.1
#   SPAWNER_DOCKER_NETWORK  [spawner] the network session containers join
#   SPAWNER_PUBLIC_URL      [http://127.0.0.1:$SPAWNER_COMPOSE_PORT]
#   SPAWNER_DOCKER_GID      [the Docker socket's group]

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-spawner}
export SPAWNER_COMPOSE_PORT=${SPAWNER_COMPOSE_PORT:-8080}
export SPAWNER_DOCKER_NETWORK=${SPAWNER_DOCKER_NETWORK:-spawner}
export SPAWNER_PUBLIC_URL=${SPAWNER_PUBLIC_URL:-http://127.0.0.1:$SPAWNER_COMPOSE_PORT}
# The provisioner runs unprivileged and reaches the engine through the
# socket's group.
export SPAWNER_DOCKER_GID=${SPAWNER_DOCKER_GID:-$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)}

log() { echo "${0##*/}: $*" >&2; }

if docker compose version >/dev/null 2>&1; then
	compose() { docker compose -f "$root/docker-compose.yml" "$@"; }
elif command -v docker-compose >/dev/null 2>&1; then
	compose() { docker-compose -f "$root/docker-compose.yml" "$@"; }
else
	log "neither 'docker compose' nor 'docker-compose' is installed"
	exit 1
fi

# session_containers lists the stack's session containers (apps and
# sidecars) by the labels the Docker backend sets.
session_containers() {
	docker ps -aq --filter label=spawner.dev/managed-by=spawner \
		--filter "label=spawner.dev/network=$SPAWNER_DOCKER_NETWORK"
}
