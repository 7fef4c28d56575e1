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
	// inProcess authenticates the all-in-one's own connections when the
	// server requires credentials; nil when it does not.
	inProcess []nats.Option
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
	e := &Embedded{}
	listening := ec.Listen != "" && ec.Listen != "off"
	if listening && c.User == "" {
		pubs, err := ensureCredentials(CredentialsDir(dataDir), Roles)
		if err != nil {
			return nil, err
		}
		if !standalone {
			// The all-in-one's own key lives in memory only: no file on
			// disk holds the union of every component's powers.
			kp, err := nkeys.CreateUser()
			if err != nil {
				return nil, fmt.Errorf("nats key: %w", err)
			}
			pub, _ := kp.PublicKey()
			pubs[RoleAll] = pub
			e.inProcess = []nats.Option{nats.Nkey(pub, kp.Sign)}
		}
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
	return e, nil
}

// Connect opens an in-process connection for the all-in-one's components.
func (e *Embedded) Connect(c Config, name string, log *slog.Logger) (*nats.Conn, error) {
	if e.inProcess != nil {
		c.Role = RoleAll
	}
	return connect(c, name, e.Server, log, e.inProcess)
}

// Shutdown stops the server and waits until it is down.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}
