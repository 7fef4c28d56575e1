package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, which is 100 on every Linux Spawner targets.
const clockTicks = 100

// CPUTime returns the user plus system CPU time a process has used.
func CPUTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields start after its ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat of %d: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("stat of %d: %d fields", pid, len(f))
	}
	// utime and stime are fields 14 and 15 of the whole line.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat of %d: bad times", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// RSS returns a process's resident set size in bytes.
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("status of %d: no VmRSS", pid)
}

// Child is a process the benchmark started and must end.
type Child struct {
	Cmd  *exec.Cmd
	done chan error
}

// StartChild runs name with args and the extra environment, its output
// appended to logPath.
func StartChild(logPath string, env []string, name string, args ...string) (*Child, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{Cmd: cmd, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait(); logf.Close() }()
	return c, nil
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.Cmd.Process.Pid }

// Stop sends SIGTERM, then SIGKILL after grace.
func (c *Child) Stop(grace time.Duration) {
	_ = c.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(grace):
	}
	_ = c.Cmd.Process.Kill()
	<-c.done
}

// Exited reports a child that ended early.
func (c *Child) Exited() <-chan error { return c.done }

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitHTTP polls url until it answers 200 or ctx ends.
func WaitHTTP(ctx context.Context, url string) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last: %v)", url, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StartHelper runs a helper that prints its addresses, one a line, and
// then "ready"; it returns the addresses once it is ready.
func StartHelper(ctx context.Context, logPath string, name string, args ...string) (*Child, []string, error) {
	cmd := exec.Command(name, args...)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{Cmd: cmd, done: make(chan error, 1)}
	lines := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var addrs []string
		for sc.Scan() {
			if sc.Text() == "ready" {
				break
			}
			addrs = append(addrs, sc.Text())
		}
		lines <- addrs
		for sc.Scan() {
		}
		c.done <- cmd.Wait()
		logf.Close()
	}()
	select {
	case addrs := <-lines:
		return c, addrs, nil
	case <-ctx.Done():
		c.Stop(time.Second)
		return nil, nil, ctx.Err()
	case <-time.After(60 * time.Second):
		c.Stop(time.Second)
		return nil, nil, fmt.Errorf("%s did not get ready (log in %s)", name, logPath)
	}
}

// TreeCPUTime is CPUTime of pid plus that of its direct children, such as
// nginx's workers.
func TreeCPUTime(pid int) (time.Duration, error) {
	total, err := CPUTime(pid)
	if err != nil {
		return 0, err
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if t, err := CPUTime(child); err == nil {
				total += t
			}
		}
	}
	return total, nil
}
