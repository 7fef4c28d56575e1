// Package apphelper is the small program that isolates one session's app:
// in the app's new namespaces it mounts a private /proc, then waits for
// its session's Job, drops to the session's uid and runs the app's shell.
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
	// Script runs through /bin/sh -c, with Env as the whole environment.
	Script string   `json:"script"`
	Env    []string `json:"env"`
}

// helperMain is the helper's whole life. It runs as root in the app's new
// namespaces ("spare", "probe"), or already as the session's uid ("kill").
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

// dropThreadTo leaves root for uid and gid on the calling thread only,
// with no supplementary groups.
func dropThreadTo(uid, gid uintptr) error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_SETGROUPS, 0, 0, 0); errno != 0 {
		return fmt.Errorf("setgroups: %w", errno)
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_SETRESGID, gid, gid, gid); errno != 0 {
		return fmt.Errorf("setgid: %w", errno)
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_SETRESUID, uid, uid, uid); errno != 0 {
		return fmt.Errorf("setuid: %w", errno)
	}
	return nil
}

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
	// From here on every step changes this thread alone, which execve
	// turns into the whole process: the other threads end with the old
	// image. Package syscall's Setuid would instead change every thread
	// of a process that is about to be replaced, one signal each.
	runtime.LockOSThread()
	if err := dropThreadTo(uintptr(job.UID), uintptr(job.GID)); err != nil {
		return err
	}
	// A change of uid clears the parent-death signal, so set it again: the
	// shell's trap then ends the app when Spawner dies.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		return fmt.Errorf("parent death signal: %w", errno)
	}
	// No setuid program may lift the app back above its uid.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); errno != 0 {
		return fmt.Errorf("no new privileges: %w", errno)
	}
	if err := os.Chdir(job.Dir); err != nil {
		return err
	}
	return syscall.Exec("/bin/sh", []string{"sh", "-c", job.Script}, job.Env)
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
