package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/settings"
)

// writeCert signs a certificate for cn (with loopback SANs) by parent, or
// self-signs a CA when parent is nil, and writes PEM files into dir.
func writeCert(t *testing.T, dir, name, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(file, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".pem", "CERTIFICATE", der)
	write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestEmbeddedServerWithPasswordAndMutualTLS runs the embedded server the
// way a locked-down deployment would and checks that Spawner's own client
// settings get in while a client without them does not.
func TestEmbeddedServerWithPasswordAndMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", "spawner test ca", nil, nil)
	writeCert(t, dir, "server", "localhost", ca, caKey)
	writeCert(t, dir, "client", "spawner", ca, caKey)
	p := func(f string) string { return filepath.Join(dir, f) }
	cfg := Config{Listen: "127.0.0.1:-1", Layout: settings.Layout{Prefix: "spawner"}, User: "spawner", Password: "s3cret-pw",
		TLSCA: p("ca.pem"), TLSCert: p("client.pem"), TLSKey: p("client-key.pem"),
		ServerTLSCert: p("server.pem"), ServerTLSKey: p("server-key.pem"), Memory: true}
	srv, err := RunEmbedded(EmbeddedFrom(cfg, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	cfg.URL = srv.ClientURL()
	log := slog.New(slog.DiscardHandler)

	nc, err := Connect(cfg, "", "test", nil, log)
	if err != nil {
		t.Fatalf("connect with the right settings: %v", err)
	}
	defer nc.Close()
	if !waitConnected(nc.IsConnected) || nc.TLSRequired() == false {
		t.Fatalf("not connected over TLS (connected %v, tls %v)", nc.IsConnected(), nc.TLSRequired())
	}
	js, _ := jetstream.New(nc)
	if _, err := Ensure(context.Background(), js, cfg); err != nil {
		t.Fatalf("ensure over TLS: %v", err)
	}

	for name, bad := range map[string]Config{
		"wrong password":     {URL: cfg.URL, User: "spawner", Password: "nope", TLSCA: cfg.TLSCA, TLSCert: cfg.TLSCert, TLSKey: cfg.TLSKey},
		"no client cert":     {URL: cfg.URL, User: "spawner", Password: "s3cret-pw", TLSCA: cfg.TLSCA},
		"no tls at all":      {URL: cfg.URL, User: "spawner", Password: "s3cret-pw"},
		"no password at all": {URL: cfg.URL, TLSCA: cfg.TLSCA, TLSCert: cfg.TLSCert, TLSKey: cfg.TLSKey},
	} {
		c, err := Connect(bad, "", "intruder", nil, log)
		if err == nil {
			connected := waitConnected(c.IsConnected)
			c.Close()
			if connected {
				t.Errorf("%s: the server let the client in", name)
			}
		}
	}
}

// waitConnected allows for RetryOnFailedConnect, which returns before the
// first connection is made.
func waitConnected(connected func() bool) bool {
	for range 40 {
		if connected() {
			return true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return false
}

func TestRedactHidesPasswords(t *testing.T) {
	got := redact("nats://user:hunter2@10.0.0.1:4222,nats://10.0.0.2:4222")
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "10.0.0.2:4222") {
		t.Fatalf("redact gave %q", got)
	}
}

// TestGeneratedCredentialsWithMutualTLS runs the all-in-one's embedded
// server listening with TLS and no user of the operator's: the in-process
// components still get in, with their in-memory key and TLS.
func TestGeneratedCredentialsWithMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", "spawner test ca", nil, nil)
	writeCert(t, dir, "server", "localhost", ca, caKey)
	writeCert(t, dir, "client", "spawner", ca, caKey)
	p := func(f string) string { return filepath.Join(dir, f) }
	cfg := Config{Listen: "127.0.0.1:-1", Layout: settings.Layout{Prefix: "spawner"}, TLSCA: p("ca.pem"), TLSCert: p("client.pem"),
		TLSKey: p("client-key.pem"), ServerTLSCert: p("server.pem"), ServerTLSKey: p("server-key.pem"), Memory: true}
	emb, err := StartEmbedded(cfg, t.TempDir(), false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	nc, err := emb.Connect(cfg, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Ensure(ctx, js, cfg); err != nil {
		t.Fatalf("in-process components over TLS with the generated key: %v", err)
	}
}
