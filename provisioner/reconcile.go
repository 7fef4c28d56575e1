package provisioner

import (
	"context"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

func (p *Provisioner) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.Reconcile)
	defer t.Stop()
	for {
		if err := p.Reconcile(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Reconcile compares the backend's instances with the registry, as a
// Kubernetes controller compares spec and status: instances with no record
// are stopped as orphaned, records with no instance end as lost, and
// spawns or stops abandoned by a crashed provisioner are finished.
func (p *Provisioner) Reconcile(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Reconcile+p.cfg.SpawnTimeout)
	defer cancel()
	// Read the registry first: an instance started after this read has a
	// record written before it started, so it is never mistaken for an orphan.
	entries, err := p.reg.List(ctx)
	if err != nil {
		return err
	}
	instances, err := p.backend.List(ctx)
	if err != nil {
		return err
	}
	records := make(map[string]messages.Session, len(entries))
	for _, e := range entries {
		records[e.Session.ID] = e.Session
	}
	running := make(map[string]bool, len(instances))
	for _, inst := range instances {
		running[inst.SessionID] = true
		if _, ok := records[inst.SessionID]; ok {
			continue
		}
		// Re-check: the record may have been written after the list.
		if _, err := p.reg.Get(ctx, inst.SessionID); err == nil {
			continue
		}
		p.log.Warn("stopping orphaned instance", "session_id", inst.SessionID, "handle", inst.Handle)
		err := p.work.do(ctx, inst.SessionID, func(ctx context.Context) error {
			if _, err := p.reg.Get(ctx, inst.SessionID); err == nil {
				return nil // Its record appeared while this waited its turn.
			}
			if err := p.backend.Stop(ctx, inst.SessionID); err != nil {
				return err
			}
			// An orphan has no record to say which app it ran.
			p.mx.SessionTerminated("unknown", messages.ReasonOrphaned)
			p.emit(messages.Event{Type: messages.EventTerminated, SessionID: inst.SessionID,
				Backend: p.cfg.Backend, Owner: p.name, Reason: messages.ReasonOrphaned})
			return nil
		})
		if err != nil {
			p.log.Error("stop orphan", "session_id", inst.SessionID, "err", err)
		}
	}
	now := p.now()
	for _, s := range records {
		if !p.mine(s) {
			continue
		}
		switch {
		case s.Status == messages.StatusReady && !running[s.ID] && p.stillReady(ctx, s.ID):
			p.log.Warn("session lost its instance", "session_id", s.ID)
			p.stopLogged(ctx, s.ID, messages.ReasonLost, "the backend has no instance for this session")
		case s.Status == messages.StatusCreating && p.abandoned(s):
			p.log.Warn("abandoned spawn", "session_id", s.ID)
			p.stopLogged(ctx, s.ID, messages.ReasonFailed, "spawn abandoned by a provisioner that stopped")
		case s.Status == messages.StatusStopping && now.Sub(s.StoppingAt) > p.cfg.SpawnTimeout:
			p.stopLogged(ctx, s.ID, s.StopReason, "finishing an interrupted stop")
		}
	}
	p.sweepCapacity(ctx)
	return nil
}

// sweepCapacity frees capacity slots whose session has no record, left by a
// provisioner that crashed between reserving and creating, or between
// deleting and releasing. The grace covers a spawn that has reserved and is
// about to write its record.
func (p *Provisioner) sweepCapacity(ctx context.Context) {
	freed, err := p.reg.SweepReservations(ctx, p.cfg.SpawnTimeout+30*time.Second)
	if err != nil {
		p.log.Error("sweep capacity slots", "err", err)
	}
	if len(freed) > 0 {
		p.log.Warn("freed capacity slots of sessions with no record", "sessions", freed)
	}
}

// mine reports whether this provisioner can see the session's instance: any
// shared backend sees all of them, a local one only its own.
func (p *Provisioner) mine(s messages.Session) bool {
	if s.Backend != p.cfg.Backend {
		return false
	}
	return !p.backend.Traits().Local || s.Owner == p.name
}

// stopLogged stops through the work queue, after any other operation on
// the session, and only logs a failure: the next reconcile finds the
// session again, which is its retry.
func (p *Provisioner) stopLogged(ctx context.Context, id string, reason messages.Reason, detail string) {
	if _, err := p.Stop(ctx, id, reason, detail); err != nil {
		p.log.Error("stop", "session_id", id, "reason", reason, "err", err)
	}
}

// stillReady re-reads a record, because a stop that began after the
// registry was listed removes the instance before the record.
func (p *Provisioner) stillReady(ctx context.Context, id string) bool {
	e, err := p.reg.Get(ctx, id)
	return err == nil && e.Session.Status == messages.StatusReady
}
