package provisioner_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

func TestPoolProvisioner(t *testing.T) {
	cfg := testConfig()
	cfg.Pool, cfg.PoolLabels = "eu-1", "region=eu,gpu=true"
	h := newHarness(t, cfg)
	h.run(t)

	// The pool's own subject, and the one every pool shares.
	rep := h.spawn(t, messages.SpawnRequest{Pool: "eu-1"})
	if rep.Error != nil {
		t.Fatalf("spawn on the pool's subject: %+v", rep.Error)
	}
	entry, err := h.reg.Get(context.Background(), rep.SessionID)
	if err != nil || entry.Session.Pool != "eu-1" {
		t.Errorf("record %+v (%v), want pool eu-1", entry.Session, err)
	}
	msg, err := h.client.Request(h.subj.AnyRequested(), mustJSON(messages.SpawnRequest{Placement: map[string]string{"region": "eu"}}), patience)
	if err != nil {
		t.Fatal(err)
	}
	var shared messages.SpawnReply
	if err := json.Unmarshal(msg.Data, &shared); err != nil || shared.Error != nil {
		t.Fatalf("spawn on the shared subject: %s (%v)", msg.Data, err)
	}
	if _, err := h.client.Request(h.subj.AnyPing(), nil, patience); err != nil {
		t.Errorf("shared ping: %v", err)
	}
	// A request for another pool, or a placement the labels do not match,
	// is refused even when it reaches this provisioner.
	for _, req := range []messages.SpawnRequest{{Pool: "us-1"}, {Placement: map[string]string{"region": "us"}}} {
		msg, err := h.client.Request(h.subj.AnyRequested(), mustJSON(req), patience)
		if err != nil {
			t.Fatal(err)
		}
		var rep messages.SpawnReply
		if json.Unmarshal(msg.Data, &rep) != nil || rep.Error == nil || rep.Error.Code != messages.CodeBadRequest {
			t.Errorf("request %+v: %s, want bad_request", req, msg.Data)
		}
	}
	// The pool directory.
	msg, err = h.client.Request(h.subj.Pools(), nil, patience)
	if err != nil {
		t.Fatal(err)
	}
	var info messages.PoolInfo
	if json.Unmarshal(msg.Data, &info) != nil || info.Pool != "eu-1" || info.Labels["gpu"] != "true" || info.Provisioner != "prov-test" {
		t.Errorf("pool info %s", msg.Data)
	}
	// Events are the pool's own, and say so.
	ev := h.events.wait(t, "the ready event", func(e event) bool { return e.Type == messages.EventReady && e.SessionID == rep.SessionID })
	if ev.Pool != "eu-1" || !strings.HasPrefix(ev.subject, "spawner.pool.eu-1.session.") {
		t.Errorf("ready event on %s with pool %q", ev.subject, ev.Pool)
	}
}
