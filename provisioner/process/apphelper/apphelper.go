// Package apphelper is the small program that isolates one session's app:
// in the app's new namespaces it mounts a private /proc, then waits for
// its session's Job, starts the app as the session's uid and stays the
// namespace's first process until the app ends.
// Any binary that links this package turns into the helper when started
// under Name, so both spawner and the lean spawner-demo can serve; spawner-demo starts in a few
// milliseconds, where spawner first runs about 16 ms of package init for
// clients the helper never uses (measured on a 2-core machine).
package apphelper

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Name is the argv[0] under which a binary that links this package
// runs as the app helper instead of its own main. Spawner re-executes
// itself this way because the steps between entering the namespaces and
// running the app (mounting /proc, dropping to the session's uid) need
// code of ours in the new process, and a Go program cannot fork.
const Name = "spawner-app-helper"

// prSetNoNewPrivs is PR_SET_NO_NEW_PRIVS, which package syscall lacks.
const prSetNoNewPrivs = 38

func init() {
	if len(os.Args) < 2 || os.Args[0] != Name {
		return
	}
	if err := helperMain(os.Args[1:]); err != nil {
		var status exitStatus
		if errors.As(err, &status) {
			os.Exit(int(status))
		}
		fmt.Fprintln(os.Stderr, "spawner app helper:", err)
		os.Exit(126)
	}
	os.Exit(0)
}

// LeanBinary is the lean binary that "make build" puts beside spawner; it
// links this package too.
const LeanBinary = "spawner-demo"

// Executable is the binary to run the helper with: the lean one beside
// exe when there is one, else exe itself.
func Executable(exe string) string {
	lean := filepath.Join(filepath.Dir(exe), LeanBinary)
	if st, err := os.Stat(lean); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return lean
	}
	return exe
}

// Command runs the helper binary exe in mode with args.
func Command(exe, mode string, args ...string) *exec.Cmd {
	cmd := exec.Command(exe, append([]string{mode}, args...)...)
	cmd.Args[0] = Name
	cmd.Env = []string{}
	return cmd
}

// JobFD is the descriptor on which a helper started in "spare" mode reads
// its Job: the first of exec.Cmd's ExtraFiles.
const JobFD = 3

// Job is what a spare helper needs to become one session's app. Spawner
// writes it as JSON on JobFD and closes the pipe; a pipe closed with no
// job tells the helper it is not needed.
type Job struct {
	// UID and GID are the session's own, never 0.
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	// Dir is the app's working directory, already owned by UID.
	Dir string `json:"dir"`
	// Binary, when set, is the app's program, made reachable to UID.
	Binary string `json:"binary,omitempty"`
	// Script runs through /bin/sh -c, with Env as the whole environment,
	// unless Argv is set.
	Script string   `json:"script"`
	Env    []string `json:"env"`
	// Argv, when set, is what the shell would run Script as: the helper
	// then runs it directly, found on Env's PATH as the shell would.
	Argv []string `json:"argv,omitempty"`
}

// helperMain is the helper's whole life. It runs as root in the app's new
// namespaces ("spare", "probe"), or already as the session's uid ("kill").
// An exitStatus it returns is the app's, for the helper to exit with.
func helperMain(args []string) error {
	switch args[0] {
	case "probe":
		return privateProc()
	case "kill":
		if len(args) != 2 {
			return fmt.Errorf("kill: want a uid")
		}
		return killAll(args[1])
	case "spare":
		return runSpare()
	default:
		return fmt.Errorf("unknown mode %q", args[0])
	}
}

// privateProc keeps our mounts from reaching the host, then mounts a
// /proc that shows only this PID namespace: the app sees its own
// processes, and neither Spawner's nor another session's.
func privateProc() error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	return nil
}

// killAll becomes uid and sends SIGKILL to -1: that skips the caller and
// reaches every process it may signal, those of its own uid.
func killAll(uidArg string) error {
	uid, err := strconv.ParseUint(uidArg, 10, 32)
	if err != nil || uid == 0 {
		return fmt.Errorf("kill: bad uid %q", uidArg)
	}
	if err := dropTo(int(uid), int(uid)); err != nil {
		return err
	}
	if err := syscall.Kill(-1, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return err
	}
	return nil
}

// dropTo leaves root for uid and gid, with no supplementary groups.
func dropTo(uid, gid int) error {
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	return nil
}

// runSpare readies the namespaces before any session needs them, which
// takes the helper's own start and the kernel's namespace setup (together
// most of an isolated start's cost) off the spawn's path; then it waits
// for its Job and runs the app.
func runSpare() error {
	if err := privateProc(); err != nil {
		return err
	}
	// What does not depend on the job is done before it comes: each step
	// after it (here, a thread the runtime starts for the signal loop) is
	// on the spawn's path.
	//
	// The app is cloned from this thread and inherits its
	// no-new-privs flag, which is per thread: no setuid program may lift
	// the app back above its uid.
	runtime.LockOSThread()
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); errno != 0 {
		return fmt.Errorf("no new privileges: %w", errno)
	}
	// A stop signals the whole process group, this helper with it, which
	// must outlive the app to report how it ended. Notify, unlike Ignore,
	// leaves these signals at their default in the app. The helper then
	// ends the group at once, as the app's shell does when it runs the
	// app (the backend's script).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		for range sigs {
			_ = syscall.Kill(0, syscall.SIGKILL) // the namespace's first process is immune
		}
	}()
	// Decoding one job builds encoding/json's decoder for the type and
	// faults its code in: traced, the helper spent 0.7 ms in the decode
	// of its first job, between page faults.
	var warm Job
	_ = json.Unmarshal([]byte(`{"uid":1,"gid":1,"dir":"/","script":"x","env":["A=b"],"argv":["x"]}`), &warm)
	f := os.NewFile(JobFD, "job")
	var job Job
	err := json.NewDecoder(io.LimitReader(f, 4<<20)).Decode(&job)
	f.Close()
	if errors.Is(err, io.EOF) {
		// Spawner let this spare go unused.
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the job: %w", err)
	}
	return runApp(job)
}

// runApp starts the app (its shell, or Argv directly) as the session's
// uid, from the thread runSpare readied, and stays, as root, the
// namespace's first process until the app ends; it then exits as the app
// did, and the kernel ends whatever else of the app still runs.
//
// The app is started from a vfork, as os/exec does, rather than by the
// helper's own execve: an execve from a Go process first ends its other
// threads and then unmaps the runtime's memory, and on a 2-core machine
// that took 4-18 ms (traced with the sched_process_exec event) against
// 0.6-2 ms from a vfork, which shares its parent's memory and has one
// thread. That was most of what isolation added to a spawn.
func runApp(job Job) error {
	if job.UID == 0 || job.GID == 0 {
		return fmt.Errorf("run: bad uid %d or gid %d", job.UID, job.GID)
	}
	// The tmpfs's directories must be searchable by the app whatever
	// Spawner's umask; the app gets Spawner's umask back.
	old := syscall.Umask(0o022)
	if job.Binary != "" {
		// Opened before any mount of expose's, which may hide it from its
		// own path.
		src, err := os.Open(job.Binary)
		if err != nil {
			return fmt.Errorf("open the app's binary: %w", err)
		}
		if err := expose(job.Binary, src); err != nil {
			return err
		}
	}
	syscall.Umask(old)
	attr := &syscall.ProcAttr{
		Dir: job.Dir, Env: job.Env, Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: job.UID, Gid: job.GID, Groups: []uint32{}},
			// The namespace ends with this helper anyway; this makes sure.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if len(job.Argv) > 0 {
		pid, err := startDirect(job, attr)
		if err == nil {
			return reap(pid)
		}
		// A file without a #! line: the shell runs it as a script.
		if !errors.Is(err, syscall.ENOEXEC) {
			return err
		}
	}
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", job.Script}, attr)
	if err != nil {
		return fmt.Errorf("run the app's shell: %w", err)
	}
	return reap(pid)
}

// startDirect starts job.Argv as the shell would: each match on PATH in
// turn, until one runs. It fails as the shell would, with its words and
// exit codes, or with ENOEXEC for a file the shell would run as a script.
func startDirect(job Job, attr *syscall.ProcAttr) (int, error) {
	err := error(syscall.ENOENT)
	for _, path := range candidates(job.Argv[0], job.Env) {
		var pid int
		if pid, err = syscall.ForkExec(path, job.Argv, attr); err == nil {
			return pid, nil
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.ENOTDIR) {
			break
		}
	}
	switch {
	case errors.Is(err, syscall.ENOEXEC):
		return 0, err
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
		fmt.Fprintf(os.Stderr, "%s: not found\n", job.Argv[0])
		return 0, exitStatus(127)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", job.Argv[0], err)
	return 0, exitStatus(126)
}

// candidates are the paths the shell would try for a command name: the
// name itself when it holds a slash, else the name in each directory of
// env's PATH (an empty one is the working directory).
func candidates(name string, env []string) []string {
	if strings.Contains(name, "/") {
		return []string{name}
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	var out []string
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		out = append(out, dir+"/"+name)
	}
	return out
}

// exitStatus is how the helper exits once the app has: its exit code, or
// 128 plus the signal that ended it, as a shell reports it.
type exitStatus int

func (e exitStatus) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// reap waits for the app, reaping on the way whatever else ends in the
// namespace, as its first process must, and returns the app's status.
func reap(app int) error {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for the app: %w", err)
		}
		if pid != app {
			continue
		}
		if ws.Signaled() {
			return exitStatus(128 + int(ws.Signal()))
		}
		return exitStatus(ws.ExitStatus())
	}
}

// expose makes binary reachable by an unprivileged uid at its own path,
// in this mount namespace only. Where a directory on the way is closed to
// others (a 0700 build or home directory), an empty tmpfs goes over it,
// holding just the path down to the binary, bound from the open file.
// The app thus runs the binary without seeing anything else there.
func expose(binary string, src *os.File) error {
	defer src.Close()
	top := hiddenAncestor(binary)
	if top == "" {
		return nil
	}
	if err := syscall.Mount("tmpfs", top, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("cover %s: %w", top, err)
	}
	if err := os.MkdirAll(filepath.Dir(binary), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(binary, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	f.Close()
	fdPath := "/proc/self/fd/" + strconv.Itoa(int(src.Fd()))
	if err := syscall.Mount(fdPath, binary, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the app's binary: %w", err)
	}
	return nil
}

// hiddenAncestor is the highest directory on path's way that others may
// not search, or "" when an unprivileged uid can reach path as it is.
func hiddenAncestor(path string) string {
	dir := "/"
	for _, part := range strings.Split(filepath.Dir(path), "/") {
		if part == "" {
			continue
		}
		dir = filepath.Join(dir, part)
		info, err := os.Stat(dir)
		if err != nil {
			return ""
		}
		if info.Mode().Perm()&0o001 == 0 {
			return dir
		}
	}
	return ""
}
