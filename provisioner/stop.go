package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

func (p *Provisioner) handleStop(ctx context.Context, msg *nats.Msg) {
	var req messages.StopRequest
	if err := json.Unmarshal(msg.Data, &req); err != nil || !messages.ValidSessionID(req.SessionID) {
		reply(msg, messages.StopReply{Error: messages.Errorf(messages.CodeBadRequest, "want {\"session_id\":<id>,\"reason\":...}")})
		return
	}
	if req.Reason == "" {
		req.Reason = messages.ReasonDeleted
	}
	// A request on this provisioner's own subject was handed on to it and
	// is never handed on again.
	if msg.Subject == p.subj.Stop() && p.forwardStop(ctx, msg, req.SessionID) {
		return
	}
	found, err := p.Stop(ctx, req.SessionID, req.Reason, req.Detail)
	if err != nil {
		p.log.Error("stop session", "session_id", req.SessionID, "err", err)
		reply(msg, messages.StopReply{Found: found, Error: asError(err)})
		return
	}
	reply(msg, messages.StopReply{Found: found})
}

// ownerStopTimeout bounds a stop handed on to the owner: its SIGTERM grace
// and the registry writes, with room to spare.
const ownerStopTimeout = 20 * time.Second

// forwardStop hands a stop request on to the provisioner that owns the
// session, when only that one can end it: a process-backend app is the
// child of the provisioner that started it, and any other provisioner
// that ended the session would delete its record and report it
// terminated while the app ran on until its owner's next reconcile. It
// relays the owner's answer and reports true, or reports false when this
// provisioner is to stop the session itself: the session is its own, or
// its backend's instances do not live beside their provisioner, or no
// owner answers (it is gone, and its apps died with it).
func (p *Provisioner) forwardStop(ctx context.Context, msg *nats.Msg, id string) bool {
	entry, err := p.reg.Get(ctx, id)
	if err != nil {
		return false
	}
	s := entry.Session
	if !p.backend.Traits().Local || s.Owner == "" || s.Owner == p.name {
		return false
	}
	fctx, cancel := context.WithTimeout(ctx, ownerStopTimeout)
	defer cancel()
	rep, err := p.nc.RequestWithContext(fctx, p.subj.OwnerStop(s.Owner), msg.Data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		p.log.Warn("stop: the owner of the session does not answer; stopping it here",
			"session_id", id, "owner", s.Owner)
		return false
	case err != nil:
		p.log.Error("stop: hand on to the owner", "session_id", id, "owner", s.Owner, "err", err)
		reply(msg, messages.StopReply{Found: true, Error: messages.Errorf(messages.CodeUnavailable,
			"the session's provisioner %s did not answer: %v", s.Owner, err)})
		return true
	}
	if msg.Reply != "" {
		_ = msg.Respond(rep.Data)
	}
	return true
}

// Stop ends a session: it marks the record stopping, stops the instance,
// removes the record and its key, and publishes terminated. Stopping an
// unknown or ended session is a successful no-op that reports false. It
// waits for any other operation on the session to finish first.
func (p *Provisioner) Stop(ctx context.Context, id string, reason messages.Reason, detail string) (bool, error) {
	var found bool
	err := p.work.do(ctx, id, func(ctx context.Context) error {
		var err error
		found, err = p.stop(ctx, id, reason, detail)
		return err
	})
	return found, err
}

// queueStop stops a session from the work queue, retrying while it fails:
// for stops nobody waits on and nobody else would retry before the next
// reconcile.
func (p *Provisioner) queueStop(id string, reason messages.Reason, detail string) {
	p.work.add(id, "stop "+string(reason), func(ctx context.Context) error {
		_, err := p.stop(ctx, id, reason, detail)
		return err
	})
}

// queueExit acts, from the work queue, on an instance the backend saw
// end. Backends report every end they see, their own stops' included,
// and the record says whether it was expected: a session whose record is
// gone or stopping was ended by a stop, which owns its outcome, so only a
// session still live is stopped here, with the exit's reason. The read
// runs after any operation in flight on the session, so a stop that
// caused the exit has finished, or marked the record, by then; a spawn in
// flight is waited for. Deciding here rather than in each backend leaves
// one rule where three backends kept their own memory of what they had
// stopped, each with its own expiry.
func (p *Provisioner) queueExit(e Exit) {
	p.work.add(e.SessionID, "act on exit", func(ctx context.Context) error {
		entry, err := p.reg.Get(ctx, e.SessionID)
		if errors.Is(err, registry.ErrNotFound) {
			return nil // Stopped; or never recorded, which reconcile handles.
		}
		if err != nil {
			return messages.Errorf(messages.CodeUnavailable, "%v", err)
		}
		s := entry.Session
		switch {
		case s.Status == messages.StatusStopping && p.now().Sub(s.StoppingAt) < p.cfg.SpawnTimeout:
			return nil
		case s.Status == messages.StatusCreating && !p.abandoned(s):
			// The spawn in flight owns the outcome: a start that failed
			// rolls back, and one that succeeded leaves a ready record
			// that the next attempt stops. Marking the record now would
			// race the rollback's delete.
			return errNotYet
		}
		p.log.Info("instance ended", "session_id", e.SessionID, "reason", e.Reason, "detail", e.Detail)
		_, err = p.stop(ctx, e.SessionID, e.Reason, e.Detail)
		return err
	})
}

func (p *Provisioner) stop(ctx context.Context, id string, reason messages.Reason, detail string) (bool, error) {
	for {
		entry, err := p.reg.Get(ctx, id)
		if errors.Is(err, registry.ErrNotFound) {
			// No record, but an instance may still exist from a crash; the
			// backend's stop is idempotent, so clean up regardless.
			// Its capacity slot, if a crash left one, is not freed here: the
			// record may be about to be written. Reconcile sweeps it later.
			return false, p.backend.Stop(ctx, id)
		}
		if err != nil {
			return false, messages.Errorf(messages.CodeUnavailable, "%v", err)
		}
		s := entry.Session
		switch s.Status {
		case messages.StatusStopping:
			if p.now().Sub(s.StoppingAt) < p.cfg.SpawnTimeout {
				return true, nil // Another stop is in progress and owns the outcome.
			}
			// That stop died with its provisioner; finish it.
		case messages.StatusCreating:
			if p.abandoned(s) {
				break
			}
			// The spawn in flight sees this when it tries to mark the record
			// ready, and rolls back; stopping the instance here would race
			// with its start.
			s.Status, s.StoppingAt, s.StopReason = messages.StatusStopping, p.now().UTC(), reason
			if _, err := p.reg.Update(ctx, s, entry.Revision); errors.Is(err, registry.ErrConflict) {
				continue
			} else if err != nil {
				return true, messages.Errorf(messages.CodeUnavailable, "%v", err)
			}
			return true, nil
		}
		if s.Status != messages.StatusStopping {
			s.Status, s.StoppingAt, s.StopReason = messages.StatusStopping, p.now().UTC(), reason
			rev, err := p.reg.Update(ctx, s, entry.Revision)
			if errors.Is(err, registry.ErrConflict) {
				continue // Someone else changed it; look again.
			}
			if err != nil {
				return true, messages.Errorf(messages.CodeUnavailable, "%v", err)
			}
			entry.Revision = rev
			p.emit(messages.Event{Type: messages.EventStopping, SessionID: id, App: s.App, Key: s.Key, RequestID: s.RequestID,
				Backend: s.Backend, Owner: s.Owner, Reason: reason})
		}
		return true, p.finishStop(ctx, s, entry.Revision, reason, detail)
	}
}

func (p *Provisioner) finishStop(ctx context.Context, s messages.Session, rev uint64, reason messages.Reason, detail string) error {
	if err := p.backend.Stop(ctx, s.ID); err != nil {
		return fmt.Errorf("stop instance of %s: %w", s.ID, err)
	}
	// The key is released first: a crash after it leaves the stopping
	// record for reconcile to finish. The event is stored before the
	// record goes (emitStored says why).
	if err := p.reg.ReleaseKey(ctx, s.Key, s.ID); err != nil {
		p.log.Error("release key", "session_id", s.ID, "err", err)
	}
	if err := p.emitStored(ctx, messages.Event{Type: messages.EventTerminated, SessionID: s.ID, App: s.App, Key: s.Key, RequestID: s.RequestID,
		URL: s.URL, Backend: s.Backend, Owner: s.Owner, Labels: s.Labels, Reason: reason, Error: detail,
		LifetimeSeconds: p.now().Sub(s.CreatedAt).Seconds()}); err != nil {
		return err
	}
	if err := p.deleteRecord(ctx, s.ID, rev); err != nil {
		return err
	}
	p.dropPooled(s.ID)
	p.release(ctx, s.ID)
	p.log.Info("session terminated", "session_id", s.ID, "reason", reason, "detail", detail)
	p.mx.SessionTerminated(p.appOf(s), reason)
	return nil
}

// deleteRecord removes a stopped session's record. When the answer is
// lost, as when NATS dies after storing the delete but before it acks, it
// asks the registry whether the delete happened once NATS is back, so the
// stop finishes here (pool, capacity, metrics) rather than failing and
// leaving them to a retry that finds no record. A conflict means someone
// else changed the record.
func (p *Provisioner) deleteRecord(ctx context.Context, id string, rev uint64) error {
	err := p.reg.Delete(ctx, id, rev)
	if err == nil || errors.Is(err, registry.ErrConflict) {
		return nil
	}
	checkCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.SpawnTimeout)
	defer cancel()
	for {
		_, getErr := p.reg.Get(checkCtx, id)
		if errors.Is(getErr, registry.ErrNotFound) {
			return nil
		}
		if getErr == nil {
			if err = p.reg.Delete(checkCtx, id, rev); err == nil || errors.Is(err, registry.ErrConflict) {
				return nil
			}
		}
		select {
		case <-checkCtx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// abandoned reports a creating record whose spawn can no longer finish: no
// spawn in this process works on it, and either this provisioner wrote it
// before it last started, or it is past the spawn timeout.
func (p *Provisioner) abandoned(s messages.Session) bool {
	ownOldRun := s.Owner == p.name && s.CreatedAt.Before(p.started)
	if !ownOldRun && p.now().Sub(s.CreatedAt) < p.cfg.SpawnTimeout+30*time.Second {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.inflight[s.ID]
}

func (p *Provisioner) track(id string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.inflight[id] = true
		p.mx.SpawnStarted()
	} else {
		delete(p.inflight, id)
		p.mx.SpawnDone()
	}
}
