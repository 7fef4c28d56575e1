package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

// SpawnNATS spawns a session with a request on "<prefix>.session.requested",
// as the gateway does, for programs that are on the bus and need no HTTP.
// The context bounds the wait; give it the installation's spawn timeout
// and a little more. A refusal comes back as *messages.Error.
func SpawnNATS(ctx context.Context, nc *nats.Conn, prefix string, req messages.SpawnRequest) (messages.SpawnReply, error) {
	subj, err := messages.NewSubjects(prefix)
	if err != nil {
		return messages.SpawnReply{}, err
	}
	if err := req.Validate(); err != nil {
		return messages.SpawnReply{}, err
	}
	data, err := json.Marshal(req)
	if err != nil {
		return messages.SpawnReply{}, fmt.Errorf("encode spawn request: %w", err)
	}
	msg, err := nc.RequestWithContext(ctx, subj.Requested(), data)
	if errors.Is(err, nats.ErrNoResponders) {
		return messages.SpawnReply{}, messages.Errorf(messages.CodeUnavailable, "no provisioner is running on %s", subj.Requested())
	}
	if err != nil {
		return messages.SpawnReply{}, fmt.Errorf("spawn request on %s: %w", subj.Requested(), err)
	}
	var rep messages.SpawnReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return messages.SpawnReply{}, fmt.Errorf("spawn reply: %w", err)
	}
	if rep.Error != nil {
		return messages.SpawnReply{}, rep.Error
	}
	return rep, nil
}
