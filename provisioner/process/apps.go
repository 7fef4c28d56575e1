package process

import (
	"fmt"
	"strings"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// One backend serves every app of the catalog: a spec's command and
// status source, where its app sets them, win over the backend's own.

// sourcesOf is the status source of the spec's app, or the backend's.
func (b *Backend) sourcesOf(spec provisioner.Spec) (messages.StatusSources, error) {
	if spec.StatusSource == "" {
		return b.sources, nil
	}
	src, err := messages.ParseStatusSources(spec.StatusSource)
	if err != nil {
		return src, fmt.Errorf("app %s: %w", spec.App, err)
	}
	if src.Sidecar && b.watcher == nil {
		return src, fmt.Errorf("app %s: the sidecar status source needs a watcher", spec.App)
	}
	return src, nil
}

// commandOf is the spec's app command, or the backend's.
func (b *Backend) commandOf(spec provisioner.Spec) string {
	if strings.TrimSpace(spec.Command) != "" {
		return spec.Command
	}
	return b.appCommand
}
