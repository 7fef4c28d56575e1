package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/spawnerhq/spawner/provisioner/process/apphelper"
)

// A spare is an isolation helper started before any session needs it: it
// already runs in fresh PID, mount and IPC namespaces with its private
// /proc, as root, and waits for a session's job. Starting the helper (a Go
// binary) and having the kernel build its namespaces was most of what an
// isolated start cost: on a 2-core machine that starts /bin/true in about
// 5 ms, an isolated start was 23 ms slower than the app started directly,
// against 4 ms without isolation. The backend keeps one spare, refilled
// after each start, so a spawn pays only for handing over its job and the
// helper's start of the app from a vfork, as the plain path does, and
// without the shell where directArgv allows (apphelper's runApp says
// why). The helper then stays the namespace's first process, and the
// session's pid is the helper's.
type spare struct {
	cmd *exec.Cmd
	// job is the write end of the helper's job pipe.
	job *os.File
	// out is the read end of its output pipe, which the app inherits.
	out *os.File
}

// startSpare starts a helper in new namespaces, waiting for its job. Its
// output goes to an OS pipe that the app inherits, read once a session
// claims it (pipeOutput says why an OS pipe).
func (b *Backend) startSpare() (*spare, error) {
	jr, jw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("job pipe: %w", err)
	}
	or, ow, err := os.Pipe()
	if err != nil {
		jr.Close()
		jw.Close()
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	cmd := apphelper.Command(b.exe, "spare")
	cmd.ExtraFiles = []*os.File{jr} // apphelper.JobFD
	cmd.Stdout, cmd.Stderr = ow, ow
	// The helper is root and the namespace's first process: if Spawner
	// dies, the helper and with it the whole session end at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Cloneflags: isolatedCloneflags}
	err = cmd.Start()
	jr.Close()
	ow.Close()
	if err != nil {
		jw.Close()
		or.Close()
		return nil, fmt.Errorf("start the isolation helper: %w", err)
	}
	return &spare{cmd: cmd, job: jw, out: or}, nil
}

// send hands the spare its job. It fails when the helper is gone.
func (s *spare) send(job apphelper.Job) error {
	data, err := json.Marshal(job)
	if err != nil {
		return err
	}
	_, err = s.job.Write(data)
	if cerr := s.job.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("hand the job to the isolation helper: %w", err)
	}
	return nil
}

// discard ends a spare that no session took, and reaps it.
func (s *spare) discard() {
	s.job.Close()
	s.out.Close()
	// Without a job the helper exits at once; a kill makes sure.
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// takeSpare returns the waiting spare, or the one on its way, or else a
// new one. The next one is started once the session is ready (Start calls
// refill): started at once, its Go runtime's start competed with the
// app's own for the CPU, and cost the app about as much as the spare had
// saved.
func (b *Backend) takeSpare(ctx context.Context) (*spare, error) {
	b.mu.Lock()
	s, coming := b.spare, b.refilled
	b.spare = nil
	if s != nil || b.awaited {
		// Only one start waits for the spare on its way; the others would
		// wait for nothing.
		coming = nil
	}
	b.awaited = b.awaited || coming != nil
	b.mu.Unlock()
	if coming != nil {
		// One on its way is nearer to ready than one started now.
		select {
		case <-coming:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		b.mu.Lock()
		s, b.spare = b.spare, nil
		b.mu.Unlock()
	}
	if s != nil {
		return s, nil
	}
	return b.startSpare()
}

// refill starts a spare in the background when the backend runs and has
// none waiting nor on its way.
func (b *Backend) refill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isolation != IsolationNamespaces || b.exits == nil || b.spare != nil || b.refilled != nil {
		return
	}
	done := make(chan struct{})
	b.refilled = done
	go func() {
		defer close(done)
		s, err := b.startSpare()
		b.mu.Lock()
		b.refilled, b.awaited = nil, false
		keep := err == nil && b.exits != nil && b.spare == nil
		if keep {
			b.spare = s
		}
		b.mu.Unlock()
		switch {
		case err != nil:
			b.log.Warn("start a spare isolation helper", "err", err)
		case !keep:
			s.discard()
		}
	}()
}

// dropSpare discards the waiting spare once the backend stops running,
// after the one on its way, if any, has been discarded.
func (b *Backend) dropSpare() {
	b.mu.Lock()
	coming := b.refilled
	b.mu.Unlock()
	if coming != nil {
		<-coming
	}
	b.mu.Lock()
	s := b.spare
	b.spare = nil
	b.mu.Unlock()
	if s != nil {
		s.discard()
	}
}

// startIsolated hands the job to a spare and returns it, its helper now
// the session's app. A waiting spare that died since it started (the
// pipe is broken) is replaced by a new one, once; should that one fail
// too, its exit and its output say why, as any app's would.
func (b *Backend) startIsolated(ctx context.Context, job apphelper.Job) (*spare, error) {
	s, err := b.takeSpare(ctx)
	if err != nil {
		return nil, err
	}
	err = s.send(job)
	if errors.Is(err, syscall.EPIPE) {
		s.discard()
		if s, err = b.startSpare(); err != nil {
			return nil, err
		}
		err = s.send(job)
	}
	if err != nil && !errors.Is(err, syscall.EPIPE) {
		// The job did not go out for another reason: nothing explains it
		// but this error.
		s.discard()
		return nil, err
	}
	return s, nil
}
