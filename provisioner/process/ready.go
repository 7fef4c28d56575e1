package process

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"

	"github.com/spawnerhq/spawner/provisioner"
)

type readinessClient struct {
	checker provisioner.StatusChecker
}

func newReadinessClient() readinessClient {
	return readinessClient{checker: provisioner.NewStatusChecker()}
}

// awaitStatus polls the app's /status until it says listening, the app
// exits, or ctx ends.
func (c readinessClient) awaitStatus(ctx context.Context, done <-chan struct{}, url string) error {
	return c.await(ctx, done, url, "")
}

// awaitListening waits until the app accepts TCP connections, for apps
// that serve no /status.
func (c readinessClient) awaitListening(ctx context.Context, done <-chan struct{}, addr string) error {
	return c.await(ctx, done, "", addr)
}

// await is the provisioner's shared readiness wait, its exit answered
// with errExited, which Start turns into the app's exit status and output.
func (c readinessClient) await(ctx context.Context, done <-chan struct{}, url, addr string) error {
	_, err := provisioner.AwaitReady(ctx, c.checker, url, addr, done)
	if errors.Is(err, provisioner.ErrExited) {
		return errExited
	}
	return err
}

// pipeOutput logs each line the app writes, tagged with its session, and
// keeps the last ones. Stdout and stderr share one pipe, so that what is
// kept is in the order the app wrote it: the error that ended it last. It
// uses an OS pipe rather than exec's, so that reading ends at EOF, when the
// last process holding it is gone, and not when the shell is reaped. The
// returned function closes the parent's write end and must run after Start.
func pipeOutput(cmd *exec.Cmd, keep *tail, log *slog.Logger) (func(), error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = w, w
	keep.readers.Add(1)
	go logLines(r, keep, log)
	return func() { w.Close() }, nil
}

func logLines(r io.ReadCloser, keep *tail, log *slog.Logger) {
	defer keep.readers.Done()
	defer r.Close()
	br := bufio.NewReaderSize(r, 16<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			// A line longer than the buffer is logged in pieces rather than
			// held in memory without bound.
			log.Info("app output", "line", string(trimNewline(line)))
			keep.add(line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
