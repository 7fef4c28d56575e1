package provisioner

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

// A provisioner of a named pool serves three more subjects than its pool's
// own: the spawns and pings that name no pool, in the same queue group as
// every other pool's provisioners, so that NATS hands them to the nearest
// pool; and the pool directory, which every provisioner answers so that
// gateways can place requests by label.

// subscribePools subscribes to the subjects every pool shares.
func (p *Provisioner) subscribePools(spawns chan *nats.Msg) ([]*nats.Subscription, error) {
	info, err := json.Marshal(messages.PoolInfo{Pool: p.cfg.Pool, Labels: p.labels, Provisioner: p.name})
	if err != nil {
		return nil, fmt.Errorf("encode pool info: %w", err)
	}
	var subs []*nats.Subscription
	fail := func(subject string, err error) ([]*nats.Subscription, error) {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	sub, err := p.nc.Subscribe(p.subj.Pools(), func(m *nats.Msg) { _ = m.Respond(info) })
	if err != nil {
		return fail(p.subj.Pools(), err)
	}
	subs = append(subs, sub)
	if p.cfg.Pool == "" {
		// The default pool's own subjects are the shared ones.
		return subs, nil
	}
	if sub, err = p.nc.ChanQueueSubscribe(p.subj.AnyRequested(), "provisioner", spawns); err != nil {
		return fail(p.subj.AnyRequested(), err)
	}
	subs = append(subs, sub)
	if sub, err = p.nc.QueueSubscribe(p.subj.AnyPing(), "provisioner", func(m *nats.Msg) { _ = m.Respond([]byte("{}")) }); err != nil {
		return fail(p.subj.AnyPing(), err)
	}
	return append(subs, sub), nil
}

// placeable refuses a request meant for another pool, which can reach this
// provisioner when a client publishes it on the shared subject.
func (p *Provisioner) placeable(req messages.SpawnRequest) error {
	if req.Pool != "" && req.Pool != p.cfg.Pool {
		return messages.Errorf(messages.CodeBadRequest, "the request names pool %q; this provisioner serves pool %q: send it on %s",
			req.Pool, p.cfg.Pool, p.subj.ForPool(req.Pool).Requested())
	}
	info := messages.PoolInfo{Pool: p.cfg.Pool, Labels: p.labels}
	if !info.Matches(req.Placement) {
		return messages.Errorf(messages.CodeBadRequest, "placement %v does not match pool %q (labels %v)", req.Placement, p.cfg.Pool, p.labels)
	}
	return nil
}
