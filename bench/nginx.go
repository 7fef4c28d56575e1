package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// Nginx is nginx proxying one path prefix to an upstream, as a child
// process with a generated configuration in its own prefix directory.
// The location passes WebSocket upgrades on and keeps plain requests on
// the keepalive upstream pool.
type Nginx struct {
	*Child
	URL string
}

const nginxConf = `worker_processes auto;
pid nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    # An upgrade asks the app for one; a plain request sends no Connection
    # header, so the upstream connection stays in the keepalive pool.
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      "";
    }
    upstream app {
        server %[1]s;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:%[2]d;
        location %[3]s/ {
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Prefix %[3]s;
            proxy_buffering off;
        }
    }
}
`

// StartNginx proxies prefix (such as /p/<id>) on a free port to upstream.
func StartNginx(ctx context.Context, dir, upstream, prefix string) (*Nginx, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, fmt.Errorf("nginx is not installed: %w", err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "tmp/body", "tmp/proxy"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	conf := fmt.Sprintf(nginxConf, upstream, port, prefix)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	child, err := StartChild(filepath.Join(dir, "logs", "stdout.log"), nil, bin,
		"-p", dir+"/", "-c", "nginx.conf", "-e", "logs/error.log", "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	n := &Nginx{Child: child, URL: "http://127.0.0.1:" + strconv.Itoa(port) + prefix + "/"}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := WaitHTTP(waitCtx, n.URL); err != nil {
		child.Stop(2 * time.Second)
		log, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
		return nil, fmt.Errorf("nginx: %w: %s", err, log)
	}
	return n, nil
}
