package bus

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Embedded is a running embedded server, as the all-in-one and "spawner
// nats" run it, and how the all-in-one's own components reach it.
type Embedded struct {
	// Server is the nats-server inside this process.
	Server *server.Server
	// inProcess authenticates the all-in-one's own connections and the
	// server's own bookkeeping when the server requires credentials.
	inProcess []nats.Option
	// cfg is what in-process connections use, as role; storeDir and
	// bucket locate the session bucket's ledger.
	cfg              Config
	role             string
	storeDir, bucket string
	log              *slog.Logger
}

// StartEmbedded runs the embedded server for c with its files under
// dataDir. The all-in-one (standalone false) listens on TCP only when
// c.Listen asks; "spawner nats" (standalone true) always listens. A
// listening server requires credentials: the operator's user and password
// if set, else one NKey per role, generated into dataDir on first start.
// Unreadable JetStream state is repaired first, see repairStore.
func StartEmbedded(c Config, dataDir string, standalone bool, log *slog.Logger) (*Embedded, error) {
	ec := EmbeddedFrom(c, CredentialsDir(dataDir))
	if standalone {
		switch ec.Listen {
		case "":
			ec.Listen = DefaultListen
		case "off":
			return nil, errors.New(`"spawner nats" serves network clients: SPAWNER_NATS_LISTEN cannot be off`)
		}
	}
	subj, err := c.Subjects()
	if err != nil {
		return nil, err
	}
	// A bad cluster setting fails before anything is written to dataDir.
	if err := c.ClusterConfig.apply(&server.Options{}); err != nil {
		return nil, err
	}
	if err := c.LeafConfig.apply(&server.Options{}, c.Pool, c.ServerName); err != nil {
		return nil, err
	}
	e := &Embedded{cfg: c, storeDir: ec.StoreDir, bucket: subj.SessionBucket()}
	if c.ClusterConfig.Enabled() {
		// A clustered server's files are one replica of several: a record
		// its disk lost comes back from the others, and reading the bucket
		// at start would wait for a quorum of servers that may start after
		// this one. So it keeps no ledger.
		e.storeDir = ""
	}
	listening := ec.Listen != "" && ec.Listen != "off"
	if listening && c.User == "" {
		pubs, err := ensureCredentials(CredentialsDir(dataDir), Roles)
		if err != nil {
			return nil, err
		}
		// The in-process key lives in memory only: no file on disk holds
		// the union of every component's powers.
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, fmt.Errorf("nats key: %w", err)
		}
		pub, _ := kp.PublicKey()
		pubs[RoleAll] = pub
		e.inProcess = []nats.Option{nats.Nkey(pub, kp.Sign)}
		e.role = RoleAll
		if ec.Nkeys, err = nkeyUsers(c, pubs); err != nil {
			return nil, err
		}
	}
	srv, err := RunEmbedded(ec)
	if err != nil {
		return nil, err
	}
	e.Server = srv
	if err := repairStore(srv, ec.StoreDir, log); err != nil {
		srv.Shutdown()
		return nil, err
	}
	if err := e.checkLedger(log); err != nil {
		srv.Shutdown()
		return nil, err
	}
	e.log = log
	return e, nil
}

// Connect opens an in-process connection for the all-in-one's components.
func (e *Embedded) Connect(c Config, name string, log *slog.Logger) (*nats.Conn, error) {
	return connect(c, e.role, name, e.Server, log, e.inProcess)
}

// Shutdown records the session bucket's keys, then stops the server and
// waits until it is down.
func (e *Embedded) Shutdown() {
	e.saveLedger(e.log)
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}
