package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/spawnerhq/spawner/provisioner"
)

// exitEvent is a container of a starting session that stopped running.
type exitEvent struct {
	role string
	id   string
	code int64
}

// waitExit reports on exited when the container stops running, until ctx
// ends. If the engine's wait fails, readiness still ends at the deadline.
func (b *Backend) waitExit(ctx context.Context, role, id string, exited chan<- exitEvent) {
	respC, errC := b.cli.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	go func() {
		select {
		case r := <-respC:
			exited <- exitEvent{role: role, id: id, code: r.StatusCode}
		case <-errC:
		}
	}()
}

// awaitReady polls the instance's /status until it says listening, or,
// with no /status to poll, its port until it accepts connections; until a
// container exits, or ctx ends.
func (b *Backend) awaitReady(ctx context.Context, inst provisioner.Instance, exited <-chan exitEvent) error {
	e, err := provisioner.AwaitReady(ctx, b.http, inst.StatusURL, inst.Upstream, exited)
	if errors.Is(err, provisioner.ErrExited) {
		return b.exitError(ctx, e)
	}
	return err
}

// exitError says why a container ended before its session was ready. Its
// output goes to the log, not into the error, because the error travels to
// API clients and the output may hold anything the app printed.
func (b *Backend) exitError(ctx context.Context, e exitEvent) error {
	reason := fmt.Sprintf("exit code %d", e.code)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if info, err := b.cli.ContainerInspect(ctx, e.id); err == nil && info.State != nil && info.State.OOMKilled {
		reason += ", killed for exceeding its memory limit"
	}
	if tail := b.outputTail(ctx, e.id); tail != "" {
		b.log.Warn("container exited before ready", "role", e.role, "container", short(e.id), "reason", reason, "output", tail)
	}
	return fmt.Errorf("the %s container %s exited before it was ready (%s); its last output is in the provisioner's log", e.role, short(e.id), reason)
}

// outputTail returns the container's last lines of output, at most 2 KiB.
func (b *Backend) outputTail(ctx context.Context, id string) string {
	rc, err := b.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "10"})
	if err != nil {
		return ""
	}
	defer rc.Close()
	var out bytes.Buffer
	// Containers without a TTY multiplex stdout and stderr in one stream.
	_, _ = stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 64<<10))
	s := strings.TrimSpace(out.String())
	if len(s) > 2048 {
		s = s[len(s)-2048:]
	}
	return s
}
