package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// ControlPlane is an all-in-one spawner running as a child process, as it
// runs in production: embedded NATS, gateway, provisioner, prober, reaper.
type ControlPlane struct {
	*Child
	HTTPURL string
	NATSURL string
	NC      *nats.Conn
	// natsPassword is the run's own NATS user's: the benchmarks seed
	// records and watch every subject, which no least-privilege role may.
	natsPassword string
	Reg          *registry.Registry
	Subj         messages.Subjects
}

// StartControlPlane runs bin in dir with the extra SPAWNER_ settings and
// waits until its gateway is ready and its registry reachable.
func StartControlPlane(ctx context.Context, bin, dir string, env ...string) (*ControlPlane, error) {
	httpPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	natsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	password := rand.Text()
	base := []string{
		"SPAWNER_HTTP_ADDR=127.0.0.1:" + strconv.Itoa(httpPort),
		"SPAWNER_NATS_LISTEN=127.0.0.1:" + strconv.Itoa(natsPort),
		"SPAWNER_DATA_DIR=" + filepath.Join(dir, "data"),
		"SPAWNER_LOG_LEVEL=warn",
		"SPAWNER_NATS_USER=bench",
		"SPAWNER_NATS_PASSWORD=" + password,
	}
	child, err := StartChild(filepath.Join(dir, "spawner.log"), append(base, env...), bin)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{Child: child, HTTPURL: "http://127.0.0.1:" + strconv.Itoa(httpPort),
		NATSURL: "nats://127.0.0.1:" + strconv.Itoa(natsPort), natsPassword: password}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := WaitHTTP(waitCtx, cp.HTTPURL+"/readyz"); err != nil {
		child.Stop(5 * time.Second)
		return nil, fmt.Errorf("control plane: %w (log in %s)", err, dir)
	}
	if err := cp.connect(ctx); err != nil {
		child.Stop(5 * time.Second)
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) connect(ctx context.Context) error {
	nc, err := nats.Connect(cp.NATSURL, nats.Name("bench"), nats.UserInfo("bench", cp.natsPassword))
	if err != nil {
		return fmt.Errorf("connect %s: %w", cp.NATSURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	cp.Subj, _ = messages.NewSubjects(messages.DefaultPrefix)
	kv, err := js.KeyValue(ctx, cp.Subj.SessionBucket())
	if err != nil {
		nc.Close()
		return fmt.Errorf("session bucket: %w", err)
	}
	cp.NC, cp.Reg = nc, registry.New(kv)
	return nil
}

// Stop ends the control plane.
func (cp *ControlPlane) Stop() {
	if cp.NC != nil {
		cp.NC.Close()
	}
	cp.Child.Stop(20 * time.Second)
}

// FakeSession is a ready record for an instance the benchmark serves
// itself, owned by nobody, so no provisioner reconciles it away.
func FakeSession(upstream, statusURL string, idleSeconds int64) messages.Session {
	id := messages.NewSessionID()
	now := time.Now().UTC()
	return messages.Session{ID: id, Status: messages.StatusReady, URL: "/p/" + id + "/", Backend: "bench",
		Owner: "bench", Upstream: upstream, StatusURL: statusURL, IdleTimeoutSeconds: idleSeconds,
		CreatedAt: now, ReadyAt: now}
}

// Register writes sessions into the registry with a few writers at once.
func (cp *ControlPlane) Register(ctx context.Context, sessions []messages.Session) error {
	const writers = 32
	errs := make(chan error, writers)
	next := make(chan messages.Session)
	for range writers {
		go func() {
			var first error
			for s := range next {
				if _, err := cp.Reg.Create(ctx, s); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for _, s := range sessions {
		next <- s
	}
	close(next)
	var first error
	for range writers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
