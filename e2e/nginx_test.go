package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/otelbee/otelbee/e2e/harness"
)

// nginxSetup is what one test's nginx configuration adds to the part every
// test shares (runNginx).
type nginxSetup struct {
	Workers int // worker processes; 1 when 0
	// KeepEnv passes OTEL_SERVICE_NAME to the workers (nginx's `env`);
	// without it nginx clears their environment, which the identity tests
	// rely on.
	KeepEnv bool
	// HTTP is the http block's own directives and servers.
	HTTP string
}

// nginxBinary is Debian's nginx, or the test is skipped.
func nginxBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("skipping: nginx not installed (Debian nginx-light; `make deps`)")
	}
	return bin
}

// runNginx runs Debian's nginx as packaged (a master and its workers, not
// daemonized) as service, with every file it writes under dir, and waits
// until it accepts on 127.0.0.1:port.
func runNginx(t *testing.T, dir, service string, port int, s nginxSetup) *harness.Process {
	t.Helper()
	bin := nginxBinary(t)
	workers := max(s.Workers, 1)
	env := ""
	if s.KeepEnv {
		env = "env OTEL_SERVICE_NAME;\n"
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes %[2]d;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
%[3]sevents { worker_connections 256; }
http {
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[4]s
}
`, dir, workers, env, s.HTTP)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatalf("writing the nginx configuration: %v", err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	proc := harness.StartProcess(t, "nginx", cmd)
	waitPort(t, fmt.Sprintf("127.0.0.1:%d", port))
	return proc
}
