package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/spawnerhq/spawner/provisioner"
)

type readinessClient struct {
	checker provisioner.StatusChecker
}

func newReadinessClient() readinessClient {
	return readinessClient{checker: provisioner.NewStatusChecker()}
}

// fastPolls is how many polls come 1 ms apart before the backoff grows.
// Most apps are up within tens of milliseconds, and a poll of a port that
// is not listening yet costs one refused connect, so polling steadily
// first wins the time a doubling backoff loses: an app ready at 17 ms
// would otherwise be seen at 31 ms.
const fastPolls = 50

// backoff polls every millisecond for about the first fastPolls ms, then
// doubles up to 50 ms so that a slow app is not hammered.
func backoff(attempt int) time.Duration {
	if attempt < fastPolls {
		return time.Millisecond
	}
	return min(time.Millisecond<<min(attempt-fastPolls+1, 6), 50*time.Millisecond)
}

// awaitStatus polls the app's /status until it says listening, the app
// exits, or ctx ends.
func (c readinessClient) awaitStatus(ctx context.Context, done <-chan struct{}, url string) error {
	var last error
	for attempt := 0; ; attempt++ {
		ok, err := c.checker.Listening(ctx, url)
		if ok {
			return nil
		}
		last = err
		select {
		case <-done:
			return errExited
		case <-ctx.Done():
			if last == nil {
				last = errors.New("/status did not report listening")
			}
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(backoff(attempt)):
		}
	}
}

// awaitListening waits until the app accepts TCP connections, for apps
// that serve no /status.
func (c readinessClient) awaitListening(ctx context.Context, done <-chan struct{}, addr string) error {
	var d net.Dialer
	for attempt := 0; ; attempt++ {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		select {
		case <-done:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(backoff(attempt)):
		}
	}
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
