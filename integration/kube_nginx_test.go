package integration

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/spawnerhq/spawner/messages"
)

// TestKubeNginxRoutesToSessionService runs deploy/nginx/spawner.conf in a
// real NGINX. A small DNS server stands in for the cluster's, answering
// for the session Service's name with the pod's address (the local
// control plane has no Service proxy), so NGINX goes straight to the pod
// as it would to the Service, WebSocket upgrade included.
func TestKubeNginxRoutesToSessionService(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx is not installed")
	}
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	ns := kubeNamespace(t, client)
	h := start(t, kubeTestConfig(t, kc, ns, ""))
	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{}`, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	pod, _ := sessionObjects(t, client, ns, rep.SessionID)
	if pod == nil {
		t.Fatal("no pod")
	}
	dns := serveDNS(t, map[string]string{"s-" + rep.SessionID + "." + ns + ".svc.cluster.local.": pod.Status.PodIP})
	base := runNginx(t, nginx, map[string]string{
		"resolver kube-dns.kube-system.svc.cluster.local":  "resolver " + dns,
		".spawner.svc.cluster.local:8080":                  "." + ns + ".svc.cluster.local:8080",
		"http://spawner-gateway.spawner.svc.cluster.local": "http://" + h.Main.HTTPAddr(),
	})

	session := base + "/p/" + rep.SessionID + "/"
	if code, page := get(t, session); code != http.StatusOK || !strings.Contains(page, "<html") {
		t.Fatalf("GET %s through NGINX: %d %.200q", session, code, page)
	}
	code, body := get(t, session+"status")
	var st messages.AppStatus
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || !st.Listening {
		t.Fatalf("GET status through NGINX: %d %q", code, body)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(strings.TrimSuffix(session, "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || !strings.HasSuffix(resp.Header.Get("Location"), "/p/"+rep.SessionID+"/") {
		t.Errorf("GET without the slash: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(session, "http") + "ws"
	alice, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("WebSocket through NGINX: %v", err)
	}
	defer alice.CloseNow()
	bob, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.CloseNow()
	if err := alice.Write(ctx, websocket.MessageText, []byte(`{"type":"text","text":"through nginx","version":0}`)); err != nil {
		t.Fatal(err)
	}
	for {
		_, data, err := bob.Read(ctx)
		if err != nil {
			t.Fatalf("the edit never came through NGINX: %v", err)
		}
		if strings.Contains(string(data), "through nginx") {
			break
		}
	}

	// A session that does not exist: its name does not resolve.
	code, body = get(t, base+"/p/"+messages.NewSessionID()+"/")
	var e struct{ Error messages.Error }
	if code != http.StatusBadGateway || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != messages.CodeUnavailable {
		t.Errorf("unknown session: %d %q, want 502 with a JSON error", code, body)
	}
	// Everything else is the gateway's.
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz through NGINX: %d", code)
	}
}

// runNginx serves deploy/nginx/spawner.conf, with each replacement made
// exactly once, on a free loopback port, and returns its base URL.
func runNginx(t *testing.T, nginx string, replace map[string]string) string {
	t.Helper()
	data, err := os.ReadFile("../deploy/nginx/spawner.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	for from, to := range replace {
		if n := strings.Count(conf, from); n == 0 {
			t.Fatalf("spawner.conf no longer contains %q", from)
		}
		conf = strings.ReplaceAll(conf, from, to)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf = strings.Replace(conf, "listen 8080;", "listen "+addr+";", 1)
	dir := t.TempDir()
	main := "pid " + dir + "/nginx.pid;\nerror_log " + dir + "/error.log;\nevents {}\nhttp {\n  access_log off;\n" +
		"  client_body_temp_path " + dir + "/body;\n  proxy_temp_path " + dir + "/proxy;\n  fastcgi_temp_path " + dir + "/fastcgi;\n" +
		"  uwsgi_temp_path " + dir + "/uwsgi;\n  scgi_temp_path " + dir + "/scgi;\n  include " + dir + "/spawner.conf;\n}\n"
	for name, content := range map[string]string{"spawner.conf": conf, "nginx.conf": main} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off; master_process off;")
	if out, err := exec.Command(nginx, "-t", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if logs, _ := os.ReadFile(filepath.Join(dir, "error.log")); t.Failed() && len(logs) > 0 {
			t.Logf("nginx error log:\n%s", logs)
		}
	})
	eventually(t, 10*time.Second, "nginx to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return "http://" + addr
}

// serveDNS answers A queries for the names in records and NXDOMAIN for
// any other, on a loopback UDP port, and returns its address.
func serveDNS(t *testing.T, records map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out, ok := dnsAnswer(buf[:n], records); ok {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func dnsAnswer(query []byte, records map[string]string) ([]byte, bool) {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	resp := dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionDesired: hdr.RecursionDesired}
	ip, known := records[q.Name.String()]
	if !known {
		resp.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, resp)
	_ = b.StartQuestions()
	_ = b.Question(q)
	if known && q.Type == dnsmessage.TypeA {
		_ = b.StartAnswers()
		addr := netip.MustParseAddr(ip).As4()
		_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: addr})
	}
	out, err := b.Finish()
	return out, err == nil
}
