package docker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// Start runs the session's container (and its sidecar) and returns once
// /status says listening. On any failure it removes what it created.
func (b *Backend) Start(ctx context.Context, spec provisioner.Spec) (provisioner.Instance, error) {
	b.setStarting(spec.SessionID, true)
	defer b.setStarting(spec.SessionID, false)
	log := b.log.With("session_id", spec.SessionID)
	inst, err := b.start(ctx, spec)
	if err != nil {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if sErr := b.Stop(cleanup, spec.SessionID); sErr != nil {
			// Reconciliation removes the leftovers as orphans later.
			log.Error("remove containers of failed start", "err", sErr)
		}
		return provisioner.Instance{}, err
	}
	log.Debug("container ready", "container", inst.Handle, "upstream", inst.Upstream)
	return inst, nil
}

func (b *Backend) start(ctx context.Context, spec provisioner.Spec) (provisioner.Instance, error) {
	id := spec.SessionID
	if err := b.ensureNetwork(ctx); err != nil {
		return provisioner.Instance{}, err
	}
	app, err := b.settingsOf(spec)
	if err != nil {
		return provisioner.Instance{}, err
	}
	created, err := b.cli.ContainerCreate(ctx, b.appConfig(spec, app), b.appHostConfig(app),
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{b.cfg.Network: {}}},
		nil, appName(id))
	if err != nil {
		if cerrdefs.IsNotFound(err) && strings.Contains(strings.ToLower(err.Error()), "image") {
			return provisioner.Instance{}, fmt.Errorf("image %q is not on the engine (Spawner never pulls; build or load it first): %w", app.image, err)
		}
		return provisioner.Instance{}, fmt.Errorf("create container: %w", err)
	}
	// The waiters watch for exits until Start returns, so a crashing app
	// fails the spawn at once instead of at the deadline.
	waitCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	exited := make(chan exitEvent, 2)
	if err := b.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return provisioner.Instance{}, fmt.Errorf("start container %s: %w", short(created.ID), err)
	}
	b.waitExit(waitCtx, RoleApp, created.ID, exited)
	info, err := b.cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		return provisioner.Instance{}, fmt.Errorf("inspect container %s: %w", short(created.ID), err)
	}
	if info.State != nil && !info.State.Running {
		return provisioner.Instance{}, b.exitError(ctx, exitEvent{role: RoleApp, id: created.ID, code: int64(info.State.ExitCode)})
	}
	ip := ""
	if ep := info.NetworkSettings; ep != nil && ep.Networks[b.cfg.Network] != nil {
		ip = ep.Networks[b.cfg.Network].IPAddress
	}
	if ip == "" && b.cfg.Route == "ip" {
		return provisioner.Instance{}, fmt.Errorf("container %s has no address on network %s", short(created.ID), b.cfg.Network)
	}
	inst := b.instance(id, b.endpoint(id, ip), short(created.ID), app.sources)
	if app.sources.Sidecar {
		sc, err := b.startSidecar(ctx, spec, created.ID)
		if err != nil {
			return provisioner.Instance{}, err
		}
		b.waitExit(waitCtx, RoleSidecar, sc, exited)
	}
	if err := b.awaitReady(ctx, inst, exited); err != nil {
		return provisioner.Instance{}, err
	}
	return inst, nil
}

func (b *Backend) startSidecar(ctx context.Context, spec provisioner.Spec, appID string) (string, error) {
	cfg := &container.Config{
		Image:  b.cfg.SidecarImage,
		Cmd:    []string{"sidecar"},
		Env:    []string{"SPAWNER_APP_PORT=" + strconv.Itoa(b.cfg.Port), "SPAWNER_SIDECAR_ADDR=:" + strconv.Itoa(SidecarPort)},
		Labels: b.labels(spec, RoleSidecar),
	}
	pids := int64(64)
	host := &container.HostConfig{
		// The sidecar reads /proc/net/tcp, which shows the sockets of the
		// network namespace it runs in: the app's.
		NetworkMode:    container.NetworkMode("container:" + appID),
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
		Resources:      container.Resources{Memory: 64 << 20, MemorySwap: 64 << 20, NanoCPUs: 250_000_000, PidsLimit: &pids},
	}
	created, err := b.cli.ContainerCreate(ctx, cfg, host, nil, nil, sidecarName(spec.SessionID))
	if err != nil {
		if cerrdefs.IsNotFound(err) && strings.Contains(strings.ToLower(err.Error()), "image") {
			return "", fmt.Errorf("sidecar image %q is not on the engine (Spawner never pulls): %w", b.cfg.SidecarImage, err)
		}
		return "", fmt.Errorf("create sidecar: %w", err)
	}
	if err := b.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return "", fmt.Errorf("start sidecar %s: %w", short(created.ID), err)
	}
	return created.ID, nil
}

// labels are the user's labels plus Spawner's own, which win.
func (b *Backend) labels(spec provisioner.Spec, role string) map[string]string {
	l := make(map[string]string, len(spec.Labels)+4)
	maps.Copy(l, spec.Labels)
	l[LabelManagedBy] = ManagedBy
	l[LabelSession] = spec.SessionID
	l[LabelRole] = role
	l[LabelNetwork] = b.cfg.Network
	return l
}

func (b *Backend) appConfig(spec provisioner.Spec, app appSettings) *container.Config {
	// HOST stays unset so that apps bind every interface of their
	// container; only the network's address is reachable anyway.
	env := make([]string, 0, len(spec.Env)+3)
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, k+"="+spec.Env[k])
	}
	env = append(env,
		"PORT="+strconv.Itoa(b.cfg.Port),
		"SPAWNER_SESSION_ID="+spec.SessionID,
		"SPAWNER_SESSION_URL="+spec.URL,
		"SPAWNER_BASE_PATH="+spec.BasePathOrRoot(),
	)
	labels := b.labels(spec, RoleApp)
	labels[LabelStatusSource] = app.sources.String()
	return &container.Config{Image: app.image, Env: env, Labels: labels}
}

func (b *Backend) appHostConfig(app appSettings) *container.HostConfig {
	h := &container.HostConfig{
		NetworkMode:    container.NetworkMode(b.cfg.Network),
		Privileged:     false,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: b.cfg.ReadOnly,
		Resources: container.Resources{
			Memory: app.memory,
			// Equal to Memory: no swap, so the limit is a limit.
			MemorySwap: app.memory,
			NanoCPUs:   app.nanoCPUs,
		},
	}
	if app.gpus > 0 {
		h.DeviceRequests = []container.DeviceRequest{{Count: int(app.gpus), Capabilities: [][]string{{"gpu"}}}}
	}
	if b.cfg.PidsLimit > 0 {
		pids := b.cfg.PidsLimit
		h.Resources.PidsLimit = &pids
	}
	if b.cfg.ReadOnly {
		h.Tmpfs = map[string]string{"/tmp": "rw,noexec,nosuid,nodev,size=64m"}
	}
	return h
}

// ensureNetwork creates the network unless it exists. It runs on every
// start, because someone may remove the network while Spawner runs.
func (b *Backend) ensureNetwork(ctx context.Context) error {
	_, err := b.cli.NetworkInspect(ctx, b.cfg.Network, network.InspectOptions{})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect network %s: %w", b.cfg.Network, err)
	}
	_, err = b.cli.NetworkCreate(ctx, b.cfg.Network, network.CreateOptions{
		Driver: "bridge",
		Labels: map[string]string{LabelManagedBy: ManagedBy, LabelNetwork: b.cfg.Network},
	})
	if err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("create network %s: %w", b.cfg.Network, err)
	}
	if err == nil {
		b.log.Info("created network", "network", b.cfg.Network)
	}
	return nil
}

// Stop force-removes the session's containers, sidecar first because it
// lives in the app's network namespace. Missing containers are success.
// It lists again after removing, because the engine can lose a forced
// removal that races with a start of the same container.
func (b *Backend) Stop(ctx context.Context, sessionID string) error {
	f := filters.NewArgs(
		filters.Arg("label", LabelManagedBy+"="+ManagedBy),
		filters.Arg("label", LabelSession+"="+sessionID),
	)
	for attempt := 0; ; attempt++ {
		list, err := b.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
		if err != nil {
			return fmt.Errorf("stop %s: list containers: %w", sessionID, err)
		}
		if len(list) == 0 {
			return nil
		}
		if attempt == 3 {
			return fmt.Errorf("stop %s: container %s is still there after removal", sessionID, short(list[0].ID))
		}
		slices.SortFunc(list, func(x, y container.Summary) int {
			return strings.Compare(roleOrder(x.Labels[LabelRole]), roleOrder(y.Labels[LabelRole]))
		})
		for _, c := range list {
			if err := b.remove(ctx, c.ID); err != nil {
				return fmt.Errorf("stop %s: %w", sessionID, err)
			}
			b.log.Debug("removed container", "session_id", sessionID, "container", short(c.ID), "role", c.Labels[LabelRole])
		}
	}
}

func roleOrder(role string) string {
	if role == RoleSidecar {
		return "0"
	}
	return "1"
}

// remove force-removes one container and, when another removal of it is
// already running, waits for that one to finish.
func (b *Backend) remove(ctx context.Context, id string) error {
	err := b.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	if !cerrdefs.IsConflict(err) {
		return fmt.Errorf("remove container %s: %w", short(id), err)
	}
	for {
		if _, iErr := b.cli.ContainerInspect(ctx, id); cerrdefs.IsNotFound(iErr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove container %s: %w", short(id), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// List returns every session with a container of this backend's network,
// running or not, so that reconciliation removes orphans in any state.
func (b *Backend) List(ctx context.Context) ([]provisioner.Instance, error) {
	list, err := b.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: b.scope()})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	seen := map[string]int{}
	var out []provisioner.Instance
	for _, c := range list {
		id := c.Labels[LabelSession]
		if id == "" {
			continue
		}
		ip := ""
		if c.NetworkSettings != nil && c.NetworkSettings.Networks[b.cfg.Network] != nil {
			ip = c.NetworkSettings.Networks[b.cfg.Network].IPAddress
		}
		sources := b.sources
		if src, err := messages.ParseStatusSources(c.Labels[LabelStatusSource]); err == nil && c.Labels[LabelStatusSource] != "" {
			sources = src
		}
		inst := b.instance(id, b.endpoint(id, ip), short(c.ID), sources)
		if i, ok := seen[id]; ok {
			if c.Labels[LabelRole] == RoleApp {
				out[i] = inst // The app container names the session, not its sidecar.
			}
			continue
		}
		seen[id] = len(out)
		out = append(out, inst)
	}
	return out, nil
}

// scope selects the containers of this installation.
func (b *Backend) scope() filters.Args {
	return filters.NewArgs(
		filters.Arg("label", LabelManagedBy+"="+ManagedBy),
		filters.Arg("label", LabelNetwork+"="+b.cfg.Network),
	)
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
