package docker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// sweepEvery is how often Run also looks for exited containers by listing
// them, in case the event stream dropped one.
const sweepEvery = time.Minute

// Traits says containers outlive the provisioner, and any provisioner on
// the same engine sees and stops them.
func (b *Backend) Traits() provisioner.Traits { return provisioner.Traits{} }

// Run reports containers that stop, outside a Start. It follows the engine's
// event stream, filtered to this installation's "die" events, because that
// reports an exit within milliseconds at no cost while nothing happens. A
// stream can break and cannot see what happened while Spawner was down,
// so Run also lists exited containers when it (re)subscribes and every
// minute. A session reported twice is harmless: stopping is idempotent.
func (b *Backend) Run(ctx context.Context, exits chan<- provisioner.Exit) error {
	for attempt := 0; ; attempt++ {
		// Subscribing from a moment before the sweep leaves no gap between
		// what the sweep saw and what the stream reports.
		since := time.Now().Add(-2 * time.Second)
		msgs, errs := b.cli.Events(ctx, events.ListOptions{
			Since:   strconv.FormatInt(since.Unix(), 10),
			Filters: b.dieFilter(),
		})
		b.sweep(ctx, exits)
		err := b.follow(ctx, msgs, errs, exits)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(since) > sweepEvery {
			attempt = 0 // That stream lived long, so this break is news, not a pattern.
		}
		wait := min(time.Second<<min(attempt, 5), 30*time.Second)
		b.log.Warn("docker event stream ended; resubscribing", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (b *Backend) dieFilter() filters.Args {
	f := b.scope()
	f.Add("type", string(events.ContainerEventType))
	f.Add("event", string(events.ActionDie))
	return f
}

// follow reports die events until the stream breaks or ctx ends.
func (b *Backend) follow(ctx context.Context, msgs <-chan events.Message, errs <-chan error, exits chan<- provisioner.Exit) error {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case <-tick.C:
			b.sweep(ctx, exits)
		case m := <-msgs:
			id := m.Actor.Attributes[LabelSession]
			if id == "" || b.startInFlight(id) {
				continue
			}
			role := m.Actor.Attributes[LabelRole]
			b.report(ctx, exits, id, fmt.Sprintf("the %s container exited with code %s", role, m.Actor.Attributes["exitCode"]))
		}
	}
}

// sweep reports every exited container of this installation that Spawner
// did not stop itself, including those that exited while it was down.
func (b *Backend) sweep(ctx context.Context, exits chan<- provisioner.Exit) {
	f := b.scope()
	f.Add("status", "exited")
	f.Add("status", "dead")
	list, err := b.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("list exited containers", "err", err)
		}
		return
	}
	for _, c := range list {
		id := c.Labels[LabelSession]
		if id == "" || b.startInFlight(id) {
			continue
		}
		b.report(ctx, exits, id, fmt.Sprintf("the %s container is %s", c.Labels[LabelRole], c.Status))
	}
}

func (b *Backend) report(ctx context.Context, exits chan<- provisioner.Exit, id, detail string) {
	// Stops end containers too; the provisioner tells those from the record.
	b.log.Info("container exited", "session_id", id, "detail", detail)
	select {
	case exits <- provisioner.Exit{SessionID: id, Reason: messages.ReasonExited, Detail: detail}:
	case <-ctx.Done():
	}
}
