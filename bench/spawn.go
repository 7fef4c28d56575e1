package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/messages"
)

// inProcess is an all-in-one Spawner running in this process through
// app.Main, as the end-to-end tests run it, so it can be profiled.
type inProcess struct {
	main   *app.Main
	url    string
	client *http.Client
	stop   func() error
}

func startInProcess(ctx context.Context, env *Env, name string) (*inProcess, error) {
	for _, kv := range os.Environ() {
		// The caller's own settings must not change what is measured.
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, app.EnvPrefix+"_") && k != "SPAWNER_TEST_KUBECONFIG" {
			os.Unsetenv(k)
		}
	}
	cfg, err := app.LoadConfig()
	if err != nil {
		return nil, err
	}
	dir := env.Scratch(name)
	cfg.Common.DataDir = filepath.Join(dir, "data")
	cfg.Bus.Listen = "127.0.0.1:-1"
	cfg.Gateway.HTTPAddr = "127.0.0.1:0"
	logf, err := os.Create(filepath.Join(dir, "spawner.log"))
	if err != nil {
		return nil, err
	}
	m := app.NewMain(cfg, slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	m.DemoCommand = env.SpawnerBin + " demo"
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx, app.ModeAll) }()
	select {
	case <-m.Started():
	case err := <-done:
		cancel()
		logf.Close()
		return nil, fmt.Errorf("spawner exited at start: %w", err)
	case <-time.After(30 * time.Second):
		cancel()
		return nil, errors.New("spawner did not start within 30s")
	}
	p := &inProcess{main: m, url: "http://" + m.HTTPAddr(),
		client: &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	p.stop = func() error {
		cancel()
		err := <-done
		logf.Close()
		return err
	}
	// Started does not promise that the provisioner has subscribed yet;
	// the first successful spawn does.
	deadline := time.Now().Add(30 * time.Second)
	for {
		id, err := p.spawn(ctx)
		if err == nil {
			_ = p.remove(ctx, id)
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.stop()
			return nil, fmt.Errorf("first spawn: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spawn calls POST /init and returns the new session's id.
func (p *inProcess) spawn(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/init", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /init: %s: %s", resp.Status, body)
	}
	var rep messages.SpawnReply
	if err := json.Unmarshal(body, &rep); err != nil || rep.SessionID == "" {
		return "", fmt.Errorf("POST /init answered %s", body)
	}
	return rep.SessionID, nil
}

func (p *inProcess) remove(ctx context.Context, id string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, p.url+"/sessions/"+id, nil)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("DELETE /sessions/%s: %s", id, resp.Status)
	}
	return nil
}

// removeAll deletes sessions with a few callers at once.
func (p *inProcess) removeAll(ctx context.Context, ids []string) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = p.remove(ctx, id)
		})
	}
	wg.Wait()
}
