package process

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/spawnerhq/spawner/provisioner/process/apphelper"
)

// The isolation levels, strongest first.
const (
	// IsolationNamespaces runs each app as its own uid, in its own PID,
	// mount and IPC namespaces with a private /proc.
	IsolationNamespaces = "namespaces"
	// IsolationUID runs each app as its own uid only.
	IsolationUID = "uid"
	// IsolationNone runs apps as Spawner's own user.
	IsolationNone = "none"
	// IsolationAuto picks the strongest level the host allows.
	IsolationAuto = "auto"
)

// DefaultUIDRange is far above the uids of people, system services and
// the subordinate ranges that useradd hands out for user namespaces.
const DefaultUIDRange = "2000000000-2000065535"

// isolatedCloneflags are the namespaces an app gets. A PID namespace ends
// every process in it when its first process dies, so nothing a session
// started, even a setsid daemon, outlives it.
const isolatedCloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC

// chooseIsolation resolves the configured level against what the host
// allows: uids need root, namespaces need root and a kernel that lets us
// create them (a container without CAP_SYS_ADMIN does not).
func chooseIsolation(want, exe string) (string, error) {
	switch want {
	case "", IsolationAuto, IsolationNamespaces, IsolationUID, IsolationNone:
	default:
		return "", fmt.Errorf("isolation %q: want auto, namespaces, uid or none", want)
	}
	if want == IsolationNone {
		return IsolationNone, nil
	}
	if os.Geteuid() != 0 {
		if want == IsolationAuto || want == "" {
			return IsolationNone, nil
		}
		return "", fmt.Errorf("isolation %q needs root; Spawner runs as uid %d", want, os.Geteuid())
	}
	if want == IsolationUID {
		return IsolationUID, nil
	}
	err := probeNamespaces(exe)
	if err == nil {
		return IsolationNamespaces, nil
	}
	if want == IsolationNamespaces {
		return "", fmt.Errorf("isolation %q: %w", want, err)
	}
	return IsolationUID, nil
}

// probeNamespaces starts the helper in fresh namespaces and has it mount a
// private /proc, as every isolated app start does.
func probeNamespaces(exe string) error {
	cmd := apphelper.Command(exe, "probe")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: isolatedCloneflags, Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("namespaces unavailable: %v %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// uidPool hands out one uid per live session. It is shared by every
// backend in this process, so two backends (as in tests) never give the
// same uid to two sessions, and it skips uids that some process, perhaps
// of another Spawner on this host, still runs as.
type uidPool struct {
	mu    sync.Mutex
	inUse map[uint32]bool
}

var uids = &uidPool{inUse: map[uint32]bool{}}

func (p *uidPool) take(first, last uint32) (uint32, error) {
	busy := liveUIDs()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := uint64(last) - uint64(first) + 1
	// A random start makes two Spawners on one host unlikely to pick the
	// same uid in the moment before either's app runs.
	start := rand.Uint64N(n)
	for i := range n {
		uid := first + uint32((start+i)%n)
		if !p.inUse[uid] && !busy[uid] {
			p.inUse[uid] = true
			return uid, nil
		}
	}
	return 0, fmt.Errorf("no free uid in %d-%d: every one runs a session", first, last)
}

func (p *uidPool) release(uid uint32) {
	p.mu.Lock()
	delete(p.inUse, uid)
	p.mu.Unlock()
}

// liveUIDs returns the uids that own a process, from /proc's directories.
func liveUIDs() map[uint32]bool {
	out := map[uint32]bool{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if info, err := e.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				out[st.Uid] = true
			}
		}
	}
	return out
}

// parseUIDRange reads "first-last". Neither end may be 0, and the range
// must not hold Spawner's own uid, or apps would be Spawner.
func parseUIDRange(s string) (uint32, uint32, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	first, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	last, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	if !ok || err1 != nil || err2 != nil || first == 0 || last < first || last >= 1<<32-1 {
		return 0, 0, fmt.Errorf("uid range %q: want first-last, such as 2000000000-2000065535", s)
	}
	if own := uint64(os.Geteuid()); own >= first && own <= last {
		return 0, 0, fmt.Errorf("uid range %q holds Spawner's own uid %d", s, own)
	}
	return uint32(first), uint32(last), nil
}

// killUID ends every process that runs as uid: a helper that becomes uid
// sends SIGKILL to -1, which reaches exactly the processes it may signal,
// all at once, so a process that forks cannot slip past a scan. The
// helper's start costs a stop 10-15 ms (demo app, 2 cores).
func killUID(exe string, uid uint32) error {
	// The helper drops to uid itself: as uid it might not reach our binary.
	cmd := apphelper.Command(exe, "kill", strconv.FormatUint(uint64(uid), 10))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kill the processes of uid %d: %v %s", uid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// appBinary is the program a command starts, when it names one by an
// absolute path as its first word ("'/opt/x/spawner' demo"). Isolated
// apps may not be able to reach it, as when it lives in a private build
// directory, so the helper makes that one file visible to them.
func appBinary(command string) string {
	s := strings.TrimSpace(command)
	s = strings.TrimSpace(strings.TrimPrefix(s, "exec "))
	var word string
	switch {
	case strings.HasPrefix(s, "'"):
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return ""
		}
		word = s[1 : 1+end]
	case strings.HasPrefix(s, `"`):
		end := strings.IndexByte(s[1:], '"')
		if end < 0 || strings.ContainsAny(s[1:1+end], `$\`+"`") {
			return ""
		}
		word = s[1 : 1+end]
	default:
		word, _, _ = strings.Cut(s, " ")
		if strings.ContainsAny(word, `'"$\;&|<>`+"`") {
			return ""
		}
	}
	if !filepath.IsAbs(word) {
		return ""
	}
	if info, err := os.Stat(word); err != nil || !info.Mode().IsRegular() {
		return ""
	}
	return filepath.Clean(word)
}
