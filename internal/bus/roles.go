package bus

import (
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// The NATS roles. Each component connects as its own role; people and other
// services connect as client or ops.
const (
	RoleGateway     = "gateway"
	RoleProvisioner = "provisioner"
	RoleProber      = "prober"
	RoleReaper      = "reaper"
	// RoleClient may request spawns and read events.
	RoleClient = "client"
	// RoleOps may read events and the session bucket.
	RoleOps = "ops"
	// RoleAll is the all-in-one's own in-process connection: the union of
	// the four components. Its key never leaves the process.
	RoleAll = "all"
)

// Roles lists the roles "spawner nats" writes credentials for.
var Roles = []string{RoleGateway, RoleProvisioner, RoleProber, RoleReaper, RoleClient, RoleOps}

// InboxPrefix is the private reply-subject prefix of a role. With it, a
// role's subscribe permission covers its own replies only, so no one else
// reads the session tokens and upstreams that travel in replies.
func InboxPrefix(subj messages.Subjects, role string) string {
	return "_INBOX_" + subj.Prefix() + "_" + role
}

// Permissions returns the publish and subscribe permissions of a role,
// derived from the subjects and JetStream API calls its component makes.
func Permissions(subj messages.Subjects, role string) (*server.Permissions, error) {
	var pub, sub, subDeny []string
	resp := false
	inbox := InboxPrefix(subj, role) + ".>"
	switch role {
	case RoleGateway:
		// A gateway sends spawns to its own pool, to the nearest and to
		// any named pool; it asks every pool which labels it has and,
		// as a hub, which sessions, and answers the latter for its own.
		pub = slices.Concat(
			[]string{subj.Requested(), subj.Ping(), subj.Stop(), subj.Activity()}, anyPool(subj),
			// Gateways answer each other's session lists in their shared
			// private inbox; no other role can read those replies.
			[]string{subj.Pools(), subj.SessionLists(), inbox},
			ensureAPI(subj), bucketRead(subj), bucketWrite(subj), streamRead(subj.EventStream()))
		sub = []string{subj.Heartbeats(), subj.SessionLists(), bucketFollow(subj), inbox}
	case RoleProvisioner:
		// A stop for a session another provisioner owns goes on to it.
		pub = slices.Concat(subj.EventSubjects(), []string{subj.OwnerStops()}, ensureAPI(subj), bucketRead(subj), bucketWrite(subj))
		sub = []string{subj.Requested(), subj.Stop(), subj.OwnerStops(), subj.Ping(), subj.AnyRequested(), subj.AnyPing(), subj.Pools(), inbox}
		resp = true // The replies to spawn, stop and ping requests.
	case RoleProber:
		pub = slices.Concat([]string{subj.Heartbeats()}, ensureAPI(subj), bucketRead(subj), bucketWrite(subj),
			membersAPI(subj))
		sub = []string{subj.Activity(), bucketFollow(subj), inbox}
	case RoleReaper:
		pub = slices.Concat([]string{subj.Stop()}, ensureAPI(subj), bucketRead(subj), bucketWrite(subj),
			durableConsumer(subj.HeartbeatStream(), subj.ReaperConsumer()))
		sub = []string{bucketFollow(subj), inbox}
	case RoleClient:
		// Spawn, and replay the event stream, as dashboards do.
		pub = slices.Concat([]string{"$JS.API.INFO", subj.Requested(), subj.Ping()}, anyPool(subj),
			streamRead(subj.EventStream()))
		// Events of every pool, but not other clients' requests, which
		// carry their env.
		sub = []string{subj.Sessions(), subj.PoolEvents(), inbox}
		subDeny = []string{subj.Requested(), subj.AnyRequested(), subj.PoolRequests()}
	case RoleOps:
		pub = slices.Concat([]string{"$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"},
			bucketRead(subj), streamRead(subj.EventStream()))
		sub = []string{subj.Sessions(), subj.PoolEvents(), subj.AnyRequested(), subj.PoolRequests(), subj.Heartbeats(), subj.Activity(), inbox}
	case RoleAll:
		perms := &server.Permissions{Publish: &server.SubjectPermission{}, Subscribe: &server.SubjectPermission{},
			Response: responses()}
		for _, r := range []string{RoleGateway, RoleProvisioner, RoleProber, RoleReaper} {
			p, _ := Permissions(subj, r)
			perms.Publish.Allow = append(perms.Publish.Allow, p.Publish.Allow...)
			perms.Subscribe.Allow = append(perms.Subscribe.Allow, p.Subscribe.Allow...)
		}
		// Its gateway answers its own session lists, in its own inbox.
		perms.Publish.Allow = uniq(append(perms.Publish.Allow, inbox))
		perms.Subscribe.Allow = uniq(append(perms.Subscribe.Allow, inbox))
		return perms, nil
	default:
		return nil, fmt.Errorf("nats role %q: want one of %v", role, Roles)
	}
	perms := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: uniq(pub)},
		Subscribe: &server.SubjectPermission{Allow: uniq(sub), Deny: subDeny},
	}
	if resp {
		perms.Response = responses()
	}
	return perms, nil
}

// responses is allow_responses: one reply to each request received, to its
// reply subject only. The server's default window is two minutes; a spawn
// may take SPAWNER_SPAWN_TIMEOUT (60s by default, more for big images)
// and still must be answered, so the window is ten minutes. The server
// forgets a reply subject as soon as it is answered.
func responses() *server.ResponsePermission {
	return &server.ResponsePermission{MaxMsgs: 1, Expires: 10 * time.Minute}
}

// anyPool is the spawn requests and pings of the nearest pool and of every
// named pool.
func anyPool(subj messages.Subjects) []string {
	return []string{subj.AnyRequested(), subj.AnyPing(), subj.PoolRequests(), subj.PoolPings()}
}

// ensureAPI is what bus.Ensure calls: every component creates or updates
// the streams and the bucket at start, so any of them may come up first.
func ensureAPI(subj messages.Subjects) []string {
	out := []string{"$JS.API.INFO"}
	for _, s := range []string{subj.HeartbeatStream(), subj.EventStream(), kvStream(subj)} {
		out = append(out, "$JS.API.STREAM.CREATE."+s, "$JS.API.STREAM.UPDATE."+s, "$JS.API.STREAM.INFO."+s)
	}
	return out
}

// membersAPI is the probers' membership bucket: creating it, announcing
// and withdrawing a replica, and watching the others.
func membersAPI(subj messages.Subjects) []string {
	s := "KV_" + MembersBucket(subj)
	return slices.Concat([]string{"$JS.API.STREAM.CREATE." + s, "$JS.API.STREAM.UPDATE." + s,
		"$KV." + MembersBucket(subj) + ".>"}, streamRead(s))
}

// kvStream is the stream behind the session bucket.
func kvStream(subj messages.Subjects) string { return "KV_" + subj.SessionBucket() }

// bucketRead covers Get (direct or by message), Keys and Watch, which run
// an ordered consumer that delivers to the caller's inbox.
// bucketFollow is the advisory of a new leader of the bucket's stream,
// on which a registry cache restarts its watch.
func bucketFollow(subj messages.Subjects) string { return registry.LeaderElected(subj.SessionBucket()) }

func bucketRead(subj messages.Subjects) []string {
	s := kvStream(subj)
	return slices.Concat([]string{"$JS.API.STREAM.INFO." + s, "$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>"}, streamRead(s))
}

// bucketWrite covers Put, Create, Update, Delete and Purge, which publish
// to the bucket's subjects and wait for the stream's ack in their inbox.
func bucketWrite(subj messages.Subjects) []string {
	return []string{"$KV." + subj.SessionBucket() + ".>"}
}

// streamRead covers ephemeral and ordered consumers on one stream, their
// flow control and their pull requests.
func streamRead(stream string) []string {
	out := []string{"$JS.API.STREAM.INFO." + stream, "$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.CONSUMER.CREATE." + stream}
	out = append(out, flowControl(stream)...)
	for _, op := range []string{"CREATE", "DELETE", "INFO", "MSG.NEXT"} {
		out = append(out, "$JS.API.CONSUMER."+op+"."+stream+".>")
	}
	return out
}

// durableConsumer covers one named durable consumer: creating it, reading
// it, pulling from it and acking its messages.
func durableConsumer(stream, name string) []string {
	out := []string{"$JS.API.CONSUMER.DURABLE.CREATE." + stream + "." + name,
		"$JS.API.CONSUMER.CREATE." + stream + "." + name, "$JS.API.CONSUMER.CREATE." + stream + "." + name + ".>",
		// Acks in the first reply format, and in the second, which puts a
		// domain and an account hash before the stream.
		"$JS.ACK." + stream + "." + name + ".>", "$JS.ACK.*.*." + stream + "." + name + ".>"}
	out = append(out, flowControl(stream)...)
	for _, op := range []string{"DELETE", "INFO", "MSG.NEXT"} {
		out = append(out, "$JS.API.CONSUMER."+op+"."+stream+"."+name)
	}
	return out
}

// flowControl covers the answers to a stream's flow control messages, in
// both reply formats.
func flowControl(stream string) []string {
	return []string{"$JS.FC." + stream + ".>", "$JS.FC.*.*." + stream + ".>"}
}

func uniq(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
