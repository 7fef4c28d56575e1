package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/klog/v2"
)

// container is the runtime state of one container. A container with a nil
// cmd is virtual: it is reported running and ready without a process.
type container struct {
	name      string
	cmd       *exec.Cmd
	startedAt metav1.Time
	done      chan struct{} // closed once the process has exited

	// Guarded by podController.mu.
	ready      bool
	exited     bool
	exitCode   int32
	finishedAt metav1.Time
}

// now is the current time at the second precision the API stores, so that a
// status computed twice compares equal to the one read back.
func now() metav1.Time {
	return metav1.NewTime(time.Now().Truncate(time.Second).UTC())
}

func virtualContainer(name string) *container {
	done := make(chan struct{})
	close(done)
	return &container{name: name, startedAt: now(), done: done, ready: true}
}

// startProcess runs command with /bin/sh in its own process group. The group
// lets the fakelet kill everything the command spawned when it stops a pod or
// exits. If the fakelet is killed outright only Pdeathsig is left, and it
// reaches just the direct child: so a simple command is exec'd by the shell
// (dash does not do that by itself) and becomes that child.
func startProcess(name, command string, env []string, logPath string) (*container, error) {
	if isSimpleCommand(command) {
		command = "exec " + command
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	var logFile *os.File
	if logPath != "" {
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		logFile = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, err
	}
	if logFile != nil {
		logFile.Close() // the child holds its own descriptor
	}
	return &container{name: name, cmd: cmd, startedAt: now(), done: make(chan struct{})}, nil
}

// isSimpleCommand reports whether command is a single command with
// arguments, which "exec" may prefix: no operators, redirections, subshells
// or substitutions, and no leading keyword or assignment.
func isSimpleCommand(command string) bool {
	if strings.ContainsAny(command, ";&|<>(){}`\n") {
		return false
	}
	fields := strings.Fields(command)
	if len(fields) == 0 || strings.Contains(fields[0], "=") {
		return false
	}
	switch fields[0] {
	case "if", "for", "while", "until", "case", "exec", "!", "[[", "function":
		return false
	}
	return true
}

// wait reaps the process and reports its exit code to onExit. Whatever the
// command left behind in its group is killed with it.
func (c *container) wait(onExit func(code int32)) {
	err := c.cmd.Wait()
	code := int32(0)
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = int32(exitErr.ExitCode())
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int32(ws.Signal()) // what a container runtime reports
		}
	} else if err != nil {
		code = 1
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	onExit(code)
	close(c.done)
}

// stop sends SIGTERM to the container's process group, waits up to grace for
// it to exit, then SIGKILLs the group.
func (c *container) stop(grace time.Duration) {
	if c.cmd == nil {
		return
	}
	pgid := -c.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		klog.InfoS("Process did not exit after SIGKILL", "container", c.name, "pid", c.cmd.Process.Pid)
	}
}

// readinessCheck returns a probe for spec: its readinessProbe if it is an
// HTTP GET or TCP probe, else a TCP connect to its first containerPort, else
// nil (ready as soon as it runs).
func readinessCheck(spec *corev1.Container, ip netip.Addr) func(ctx context.Context) bool {
	port := func(p intstr.IntOrString) int {
		if p.Type == intstr.Int {
			return p.IntValue()
		}
		for _, cp := range spec.Ports {
			if cp.Name == p.StrVal {
				return int(cp.ContainerPort)
			}
		}
		return 0
	}
	if pr := spec.ReadinessProbe; pr != nil && pr.HTTPGet != nil {
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(port(pr.HTTPGet.Port)))
		url := fmt.Sprintf("http://%s%s", addr, pr.HTTPGet.Path)
		return func(ctx context.Context) bool {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return false
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode >= 200 && resp.StatusCode < 400
		}
	}
	p := 0
	if pr := spec.ReadinessProbe; pr != nil && pr.TCPSocket != nil {
		p = port(pr.TCPSocket.Port)
	} else if len(spec.Ports) > 0 {
		p = int(spec.Ports[0].ContainerPort)
	}
	if p == 0 {
		return nil
	}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(p))
	return func(ctx context.Context) bool {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
}

// probeUntilReady polls check every 100ms until it passes, the process
// exits, or ctx ends; onReady runs once on success.
func (c *container) probeUntilReady(ctx context.Context, check func(context.Context) bool, onReady func()) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		ok := check(pctx)
		cancel()
		if ok {
			onReady()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case <-tick.C:
		}
	}
}

// ipPool hands out loopback addresses next-fit, so a freed address is not
// reused while a just-killed process may still hold its port.
type ipPool struct {
	prefix netip.Prefix
	next   netip.Addr
	used   map[netip.Addr]bool
}

func newIPPool(prefix netip.Prefix) *ipPool {
	return &ipPool{prefix: prefix, next: prefix.Addr(), used: map[netip.Addr]bool{}}
}

// claim marks ip as in use, for pods that already had an address when the
// fakelet (re)started.
func (p *ipPool) claim(ip netip.Addr) { p.used[ip] = true }

func (p *ipPool) release(ip netip.Addr) { delete(p.used, ip) }

func (p *ipPool) allocate() (netip.Addr, error) {
	size := 1 << (32 - p.prefix.Bits())
	for range size {
		ip := p.next.Next()
		if !p.prefix.Contains(ip) {
			ip = p.prefix.Addr()
		}
		p.next = ip
		// Skip .0 and .255 so that addresses look like ordinary host IPs.
		if last := ip.As4()[3]; last == 0 || last == 255 || p.used[ip] {
			continue
		}
		p.used[ip] = true
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("pod CIDR %s is exhausted", p.prefix)
}
