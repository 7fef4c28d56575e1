package bus

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Credentials are NKeys rather than passwords: the server holds only public
// keys, so nothing it keeps (its config, its memory, its environment) lets
// anyone connect; each role's seed sits in one 0600 file that the nats CLI
// reads as it is (--nkey); and no secret ever travels in the environment,
// where an app that reads /proc/<pid>/environ would find it.

// CredentialsDir is where the embedded server keeps JetStream and the role
// credentials it generates, under the data dir.
func CredentialsDir(dataDir string) string { return filepath.Join(dataDir, "nats") }

// CredentialsFile is the NKey seed file of one role under the data dir.
func CredentialsFile(dataDir, role string) string {
	return filepath.Join(CredentialsDir(dataDir), role+".nk")
}

// OwnCredentials reports whether the operator configured how to
// authenticate, in which case Spawner generates and picks nothing.
func (c Config) OwnCredentials() bool {
	return c.Creds != "" || c.NKeyFile != "" || c.User != ""
}

// ForRole returns the settings a component of role connects with: against
// an external NATS with no credentials of the operator's, the role's
// generated seed file from the data dir if there is one (as "spawner nats"
// writes it on the same data dir). The role itself goes to Connect.
func (c Config) ForRole(role, dataDir string) Config {
	if c.URL != "" && !c.OwnCredentials() {
		if f := CredentialsFile(dataDir, role); fileExists(f) {
			c.NKeyFile = f
		}
	}
	return c
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// ensureCredentials loads each role's seed from dir, generating any that
// is missing, and returns the public keys. The dir is made 0700 and every
// seed file 0600, whatever they were before.
func ensureCredentials(dir string, roles []string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats credentials dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats credentials dir: %w", err)
	}
	pubs := map[string]string{}
	for _, role := range roles {
		path := filepath.Join(dir, role+".nk")
		seed, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			seed, err = writeSeed(path)
		}
		if err != nil {
			return nil, fmt.Errorf("nats credentials for %s: %w", role, err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("nats credentials for %s: %w", role, err)
		}
		kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
		if err != nil {
			return nil, fmt.Errorf("nats credentials %s: not an NKey seed", path)
		}
		pub, err := kp.PublicKey()
		if err != nil || !nkeys.IsValidPublicUserKey(pub) {
			return nil, fmt.Errorf("nats credentials %s: not a user NKey", path)
		}
		pubs[role] = pub
	}
	return pubs, nil
}

// writeSeed creates a user NKey and writes its seed, never replacing a
// file that appeared meanwhile.
func writeSeed(path string) ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return nil, err
	}
	return seed, f.Close()
}

// nkeyUsers gives each public key its role's permissions.
func nkeyUsers(c Config, pubs map[string]string) ([]*server.NkeyUser, error) {
	subj, err := c.Subjects()
	if err != nil {
		return nil, err
	}
	roles := make([]string, 0, len(pubs))
	for r := range pubs {
		roles = append(roles, r)
	}
	slices.Sort(roles)
	var users []*server.NkeyUser
	for _, role := range roles {
		perms, err := Permissions(subj, role)
		if err != nil {
			return nil, err
		}
		users = append(users, &server.NkeyUser{Nkey: pubs[role], Permissions: perms})
	}
	return users, nil
}

// DefaultListen is where "spawner nats" listens when no address is set.
const DefaultListen = "127.0.0.1:4222"

// NATSFlags returns the nats CLI flags that connect as role to the NATS
// this configuration uses: the external one, or the embedded one when it
// listens.
func NATSFlags(c Config, dataDir, role string) ([]string, error) {
	if !slices.Contains(Roles, role) {
		return nil, fmt.Errorf("role %q: want one of %s", role, strings.Join(Roles, ", "))
	}
	subj, err := c.Subjects()
	if err != nil {
		return nil, err
	}
	server := c.URL
	if server == "" {
		if c.Listen == "" || c.Listen == "off" {
			return nil, errors.New("this configuration's NATS takes no network clients: set SPAWNER_NATS_LISTEN " +
				"(for example " + DefaultListen + ") for the all-in-one, or SPAWNER_NATS_URL for an external NATS")
		}
		host, port, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("SPAWNER_NATS_LISTEN %q: %w", c.Listen, err)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		server = "nats://" + net.JoinHostPort(host, port)
	}
	flags := []string{"--server", server}
	switch {
	case c.Creds != "":
		flags = append(flags, "--creds", c.Creds)
	case c.NKeyFile != "":
		flags = append(flags, "--nkey", c.NKeyFile)
	case c.User != "":
		flags = append(flags, "--user", c.User, "--password", c.Password)
	default:
		f := CredentialsFile(dataDir, role)
		if fileExists(f) {
			flags = append(flags, "--nkey", f)
		} else if c.URL == "" {
			return nil, fmt.Errorf("no %s credentials in %s yet: start spawner with this configuration first, it writes them",
				role, CredentialsDir(dataDir))
		}
	}
	if c.TLSCA != "" {
		flags = append(flags, "--tlsca", c.TLSCA)
	}
	if c.TLSCert != "" {
		flags = append(flags, "--tlscert", c.TLSCert, "--tlskey", c.TLSKey)
	}
	return append(flags, "--inbox-prefix", InboxPrefix(subj, role)), nil
}
