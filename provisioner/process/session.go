package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/process/apphelper"
)

// errExited is the readiness wait's answer when the app ends first.
var errExited = errors.New("the app exited before it was ready")

// tailBytes bounds the output kept for an error message: enough for the
// last lines of a stack trace or a usage message, small in a JSON reply.
const tailBytes = 2 << 10

// tail keeps the last tailBytes of an app's output.
type tail struct {
	mu      sync.Mutex
	buf     []byte
	cut     bool
	readers sync.WaitGroup
}

func (t *tail) add(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailBytes; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
}

// lines returns the kept output, whole lines only where it was cut.
func (t *tail) lines() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if t.cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(bytes.ToValidUTF8(b, []byte("?"))), "\n")
}

// exitError says how an app that ended before it was ready ended, and
// what it wrote last, so whoever asked for the session can act on it.
func exitError(p *proc) error {
	// The output may still be in the pipes; its readers end at EOF, which
	// comes once every process of the app is gone, as it now is.
	drained := make(chan struct{})
	go func() { p.output.readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
	}
	how := "exit status 0"
	if p.err != nil {
		how = p.err.Error()
	}
	out := p.output.lines()
	if out == "" {
		return fmt.Errorf("%w (%s); it wrote nothing", errExited, how)
	}
	return fmt.Errorf("%w (%s); its last output:\n%s", errExited, how, out)
}

// prepare gives the session its uid and working directory.
func (b *Backend) prepare(id string, p *proc) error {
	if b.isolation != IsolationNone {
		uid, err := uids.take(b.uidLo, b.uidHi)
		if err != nil {
			return err
		}
		p.uid = uid
	}
	if b.cfg.Workdir != "" {
		p.workdir = b.cfg.Workdir
		return nil
	}
	dir, err := os.MkdirTemp("", "spawner-app-"+id+"-")
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	p.workdir, p.removeDir = dir, dir
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	if p.uid != 0 {
		if err := os.Chown(dir, int(p.uid), int(p.uid)); err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
	}
	return nil
}

// cleanup returns what prepare and reservePort took. It runs once the
// app's processes are gone, so none of them can still write there.
func (b *Backend) cleanup(p *proc) {
	if p.removeDir != "" {
		if err := os.RemoveAll(p.removeDir); err != nil {
			b.log.Warn("remove the app's working directory", "dir", p.removeDir, "err", err)
		}
	}
	if p.uid != 0 {
		uids.release(p.uid)
	}
	b.mu.Lock()
	delete(b.ports, p.port)
	b.mu.Unlock()
}

// job is what a spare isolation helper needs to run the session's app.
func (b *Backend) job(spec provisioner.Spec, p *proc) apphelper.Job {
	command := b.commandOf(spec)
	binary := b.binary
	if command != b.appCommand {
		binary = appBinary(command)
	}
	env := appEnv(spec, b.cfg.Host, p.port, p.workdir)
	job := apphelper.Job{UID: p.uid, GID: p.uid, Dir: p.workdir, Binary: binary, Script: script(command), Env: env}
	if argv, ok := directArgv(command, env); ok {
		job.Argv = argv
	}
	return job
}

// command builds the app's process without namespaces: its shell, as
// the session's uid where apps get one.
func (b *Backend) command(spec provisioner.Spec, p *proc) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", script(b.commandOf(spec)))
	cmd.Dir = p.workdir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if p.uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: p.uid, Gid: p.uid, Groups: []uint32{}}
	}
	cmd.Env = appEnv(spec, b.cfg.Host, p.port, p.workdir)
	return cmd
}

// appEnv passes Spawner's environment on without its own SPAWNER_ and NATS
// settings, which may hold tokens and passwords the app must not see.
func appEnv(spec provisioner.Spec, host string, port int, home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SPAWNER_") || strings.HasPrefix(kv, "NATS_") ||
			strings.HasPrefix(kv, "PORT=") || strings.HasPrefix(kv, "HOST=") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	// PWD as the shell would set it, which the helper may not run.
	env = append(env, "HOME="+home, "PWD="+home)
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	return lastWins(append(env,
		"PORT="+strconv.Itoa(port),
		"HOST="+host,
		"SPAWNER_SESSION_ID="+spec.SessionID,
		"SPAWNER_SESSION_URL="+spec.URL,
		"SPAWNER_BASE_PATH="+spec.BasePathOrRoot(),
	))
}

// lastWins keeps one entry per variable, the last, as the shell and
// os/exec do: the isolation helper may start the app without either, and
// a program's getenv finds the first of several (HOME, say, which the app
// gets as its working directory over Spawner's own).
func lastWins(env []string) []string {
	last := make(map[string]int, len(env))
	for i, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		last[name] = i
	}
	out := env[:0]
	for i, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if last[name] == i {
			out = append(out, kv)
		}
	}
	return out
}
