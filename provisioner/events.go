package provisioner

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/messages"
)

// emit publishes an event and forgets it: for the events whose loss
// leaves nothing wrong, as a session's ready, which its record also says.
func (p *Provisioner) emit(ev messages.Event) {
	msg, err := p.eventMsg(ev)
	if err != nil {
		p.log.Error("encode event", "type", ev.Type, "err", err)
		return
	}
	if err := p.nc.PublishMsg(msg); err != nil {
		p.log.Error("publish event", "type", ev.Type, "session_id", ev.SessionID, "err", err)
	}
}

// storeEventTimeout bounds how long an end's event is retried before the
// stop gives up and leaves the record for a later try.
const storeEventTimeout = 15 * time.Second

// storeEventTry bounds one try; a stream answers in milliseconds.
const storeEventTry = 2 * time.Second

// emitStored publishes a session's last event, terminated or failed, and
// returns once the event stream has stored it. It runs before the record
// goes: once the record is gone no reconcile finds the session again, so
// an event lost after the delete is lost for good. The fault suite lost
// a session's terminated event that way, about one in five hundred,
// when NATS or the provisioner died between the delete and a publish that
// nothing acknowledged. A stop that dies after this and before the delete
// is finished by the next one, whose event has the same message id: the
// stream drops it as a duplicate within its window (two minutes), and
// past that a consumer may see a session end twice, never not at all.
func (p *Provisioner) emitStored(ctx context.Context, ev messages.Event) error {
	msg, err := p.eventMsg(ev)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", ev.Type, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeEventTimeout)
	defer cancel()
	id := ev.SessionID + "." + string(ev.Type)
	for {
		// Each try has its own bound: when the stream is missing, a core
		// subscriber to the subject still takes the message, and no
		// answer tells the publisher that nothing stored it.
		tryCtx, cancelTry := context.WithTimeout(ctx, storeEventTry)
		_, err = p.js.PublishMsg(tryCtx, msg, jetstream.WithMsgID(id))
		cancelTry()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return messages.Errorf(messages.CodeUnavailable, "store the %s event of %s: %v", ev.Type, ev.SessionID, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (p *Provisioner) eventMsg(ev messages.Event) (*nats.Msg, error) {
	if ev.Time.IsZero() {
		ev.Time = p.now().UTC()
	}
	ev.Pool = p.cfg.Pool
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return &nats.Msg{Subject: p.subj.Event(ev.Type), Data: data}, nil
}
