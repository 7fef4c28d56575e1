package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/internal/bus"
)

// checkResult is one doctor check's outcome. Fix is what to do about a
// failure, in words a new user can act on.
type checkResult struct {
	Name, Detail, Fix string
	OK                bool
}

func pass(name, detail string) checkResult { return checkResult{Name: name, Detail: detail, OK: true} }

func failed(name, detail, fix string) checkResult {
	return checkResult{Name: name, Detail: detail, Fix: fix}
}

// runDoctor is "spawner doctor": it checks what a new installation gets
// wrong, prints each result, and fails when any check fails.
func runDoctor(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 {
		return errors.New("doctor takes no arguments; it reads the same settings as spawner")
	}
	cfg, err := app.LoadConfig()
	if err != nil {
		printResults(out, []checkResult{failed("settings", err.Error(), "correct the variable named above; spawner help lists each setting's form")})
		return errors.New("doctor: the settings do not parse")
	}
	results := doctor(ctx, cfg)
	if n := printResults(out, results); n > 0 {
		return fmt.Errorf("doctor: %d of %d checks failed", n, len(results))
	}
	return nil
}

func printResults(out io.Writer, results []checkResult) (failures int) {
	for _, r := range results {
		status := "ok  "
		if !r.OK {
			status = "FAIL"
			failures++
		}
		fmt.Fprintf(out, "%s  %-14s %s\n", status, r.Name, r.Detail)
		if !r.OK && r.Fix != "" {
			fmt.Fprintf(out, "      %-14s fix: %s\n", "", r.Fix)
		}
	}
	return failures
}

// doctor runs every check that applies to cfg, in the order a user would
// fix them.
func doctor(ctx context.Context, cfg app.Config) []checkResult {
	results := []checkResult{
		checkDataDir(cfg.Common.DataDir),
		checkPort(ctx, "http", "SPAWNER_HTTP_ADDR", cfg.Gateway.HTTPAddr),
	}
	if cfg.Common.MetricsAddr != "" {
		results = append(results, checkPort(ctx, "metrics", "SPAWNER_METRICS_ADDR", cfg.Common.MetricsAddr))
	}
	if cfg.Bus.URL == "" {
		if cfg.Bus.Listen != "" && cfg.Bus.Listen != "off" {
			results = append(results, checkPort(ctx, "nats", "SPAWNER_NATS_LISTEN", cfg.Bus.Listen))
		}
	} else {
		results = append(results, checkNATS(ctx, cfg.Bus))
	}
	switch cfg.Provisioner.Backend {
	case "process":
		results = append(results, checkAppCommand(cfg.Process.Command))
	case "docker":
		results = append(results, checkDocker(ctx))
	case "kubernetes":
		results = append(results, checkKube(ctx, cfg.Kube)...)
	default:
		results = append(results, failed("backend", fmt.Sprintf("SPAWNER_BACKEND=%q is not a backend", cfg.Provisioner.Backend),
			"set SPAWNER_BACKEND to process, docker or kubernetes"))
	}
	return results
}

// checkDataDir creates the data dir as Spawner would and writes a file in it.
func checkDataDir(dir string) checkResult {
	const name = "data dir"
	fix := "make it writable by this user, or set SPAWNER_DATA_DIR to a directory that is"
	if err := os.MkdirAll(filepath.Join(dir, "nats"), 0o700); err != nil {
		return failed(name, fmt.Sprintf("%s cannot be created: %v", dir, err), fix)
	}
	f, err := os.CreateTemp(dir, ".doctor-*")
	if err != nil {
		return failed(name, fmt.Sprintf("%s is not writable: %v", dir, err), fix)
	}
	f.Close()
	os.Remove(f.Name())
	return pass(name, dir+" is writable")
}

// checkPort binds addr as Spawner would. When the port is taken, it says
// whether a Spawner is what holds it.
func checkPort(ctx context.Context, name, setting, addr string) checkResult {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return pass(name, addr+" is free")
	}
	detail := fmt.Sprintf("%s cannot be bound: %v", addr, err)
	if errors.Is(err, syscall.EADDRINUSE) && name == "http" && answersReadyz(ctx, addr) {
		detail = addr + " is in use by a running Spawner (it answers /readyz)"
	}
	return failed(name, detail, "stop what listens there, or set "+setting+" to a free address, e.g. "+setting+"="+portExamples[setting])
}

// portExamples are free-address suggestions, one per setting checkPort
// checks.
var portExamples = map[string]string{
	"SPAWNER_HTTP_ADDR":    ":9090",
	"SPAWNER_NATS_LISTEN":  "127.0.0.1:4223 (or off, if nothing outside Spawner uses NATS)",
	"SPAWNER_METRICS_ADDR": "127.0.0.1:9091",
}

func answersReadyz(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURLFromListen(addr)+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	// Ready or not (503 while NATS is away), /readyz answers in JSON.
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
}

// checkNATS connects to the configured NATS and asks JetStream for the
// account's limits, which fails when JetStream is off.
func checkNATS(ctx context.Context, cfg bus.Config) checkResult {
	const name = "nats"
	nc, err := bus.Connect(cfg, "", "spawner-doctor", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return failed(name, err.Error(), "check SPAWNER_NATS_URL and the SPAWNER_NATS_* credentials")
	}
	defer nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !nc.IsConnected() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	where := redactURL(cfg.URL)
	if !nc.IsConnected() {
		detail := "nothing answers at " + where
		if e := nc.LastError(); e != nil {
			detail += ": " + e.Error()
		}
		return failed(name, detail, "start NATS (spawner nats, or nats-server -js), or correct SPAWNER_NATS_URL and its credentials")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return failed(name, err.Error(), "")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return failed(name, where+" is reachable but JetStream is not enabled", "start nats-server with -js (or jetstream {} in its config), for this account too")
		}
		return failed(name, where+": JetStream: "+err.Error(), "enable JetStream on the server and for this account")
	}
	return pass(name, where+" is reachable, JetStream enabled")
}

// redactURL drops a user and password from a NATS URL list.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
				parts[i] = u[:scheme+3] + "***@" + u[at+1:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// shellBuiltins start commands whose program the shell picks later.
var shellBuiltins = map[string]bool{"cd": true, "export": true, ".": true, "source": true, "set": true, "eval": true, ":": true}

// checkAppCommand finds the program the process backend's command runs,
// the first word that is not a variable assignment, as sh would.
func checkAppCommand(command string) checkResult {
	const name = "app command"
	if _, err := exec.LookPath("sh"); err != nil {
		return failed(name, "sh is not on PATH; the process backend runs apps with sh -c", "install a POSIX shell")
	}
	if strings.TrimSpace(command) == "" {
		exe, err := os.Executable()
		if err != nil {
			return failed(name, "the bundled demo app: this binary's path is unknown: "+err.Error(), "set SPAWNER_APP_COMMAND")
		}
		return pass(name, "the bundled demo app: "+app.DefaultDemoCommand(exe))
	}
	prog := ""
	for _, w := range strings.Fields(command) {
		if strings.Contains(w, "=") && !strings.HasPrefix(w, "=") && !strings.ContainsAny(w[:strings.Index(w, "=")], "/$'\"") {
			continue
		}
		if w == "exec" { // "exec app ..." runs app
			continue
		}
		prog = strings.Trim(w, `'"`)
		break
	}
	if prog == "" || strings.ContainsAny(prog, "$`;&|()<>") || shellBuiltins[prog] {
		return pass(name, "SPAWNER_APP_COMMAND's program is chosen when it runs; not checked")
	}
	path, err := exec.LookPath(prog)
	if err != nil {
		return failed(name, fmt.Sprintf("%s (from SPAWNER_APP_COMMAND) is not found: %v", prog, err),
			"install it, give its full path in SPAWNER_APP_COMMAND, or add its directory to PATH")
	}
	return pass(name, prog+" is "+path)
}
