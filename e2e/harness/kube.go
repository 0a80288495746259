package harness

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Kube is a real Kubernetes control plane for the e2e tests: Debian's etcd
// and a kube-apiserver built from the Kubernetes Go modules by
// scripts/build-kube-apiserver.sh (cached under ~/.cache/otelbee). No
// controllers or kubelet run: tests create the objects the controllers
// would (ReplicaSets, Pods with container statuses) themselves.
type Kube struct {
	// Kubeconfig is a kubeconfig file for the API server (static admin token).
	Kubeconfig string
	// AgentKubeconfig authenticates as the Helm chart's service account
	// (AgentServiceAccount in AgentNamespace), which has only what RBAC
	// grants it: bind the chart's ClusterRole to it.
	AgentKubeconfig string
	Client          kubernetes.Interface
	URL             string

	t       testing.TB
	dir     string
	bin     string
	port    int
	etcdURL string
	token   string
	api     *Process
}

// The service account the Helm chart's release "otelbee" in namespace
// "observability" runs the agent as.
const (
	AgentNamespace      = "observability"
	AgentServiceAccount = "otelbee"
)

// KubeAPIServerBin is $KUBE_APISERVER_BIN, else the cached build.
func KubeAPIServerBin() (string, error) {
	p := os.Getenv("KUBE_APISERVER_BIN")
	if p == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		p = filepath.Join(cache, "otelbee", "kube-apiserver", "kube-apiserver")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("kube-apiserver %s missing (run `make kube-apiserver`): %w", p, err)
	}
	return p, nil
}

// StartKube starts etcd and the API server and waits until it is ready. It
// skips the test when either binary is missing.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	RequireRoot(t)
	bin, err := KubeAPIServerBin()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("skipping: etcd not installed (Debian etcd-server; `make deps`)")
	}
	k := &Kube{t: t, dir: t.TempDir(), bin: bin}
	// A free port can be taken before etcd binds it: try again with others.
	for attempt := 0; ; attempt++ {
		clientPort, peerPort := FreePort(t), FreePort(t)
		k.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", clientPort)
		ecmd := exec.Command(etcd, "--data-dir", filepath.Join(k.dir, fmt.Sprintf("etcd%d", attempt)),
			"--listen-client-urls", k.etcdURL, "--advertise-client-urls", k.etcdURL,
			"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
			"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
			"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", peerPort),
			"--quota-backend-bytes", "1073741824")
		p := StartProcess(t, "etcd", ecmd)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", clientPort), p.alive)
		cancel()
		if err == nil {
			break
		}
		p.Stop()
		if attempt == 4 || !errAddrInUse(p.Log()) {
			t.Fatalf("etcd did not start: %v\n%s", err, p.LogTail(20))
		}
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(k.dir, "sa.key")
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	tok := make([]byte, 16)
	rand.Read(tok)
	k.token = hex.EncodeToString(tok)
	rand.Read(tok)
	agentToken := hex.EncodeToString(tok)
	os.WriteFile(filepath.Join(k.dir, "tokens.csv"), []byte(k.token+`,admin,admin-uid,"system:masters"`+"\n"+
		agentToken+",system:serviceaccount:"+AgentNamespace+":"+AgentServiceAccount+`,agent-uid,"system:serviceaccounts"`+"\n"), 0o600)
	for attempt := 0; ; attempt++ {
		k.port = FreePort(t)
		k.URL = fmt.Sprintf("https://127.0.0.1:%d", k.port)
		err := k.startAPIServer()
		if err == nil {
			break
		}
		if attempt == 4 || !errAddrInUse(k.api.Log()) {
			t.Fatalf("kube-apiserver not ready: %v\n%s", err, k.api.LogTail(30))
		}
	}

	k.Kubeconfig = filepath.Join(k.dir, "kubeconfig")
	k.AgentKubeconfig = filepath.Join(k.dir, "agent-kubeconfig")
	kc := `apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
`
	if err := os.WriteFile(k.Kubeconfig, []byte(fmt.Sprintf(kc, k.URL, k.token)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.AgentKubeconfig, []byte(fmt.Sprintf(kc, k.URL, agentToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 2000, 2000 // the tests create thousands of pods
	k.Client, err = kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *Kube) startAPIServer() error {
	t := k.t
	t.Helper()
	cmd := exec.Command(k.bin,
		"--etcd-servers="+k.etcdURL,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", k.port),
		"--cert-dir="+filepath.Join(k.dir, "certs"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(k.dir, "sa.key"),
		"--service-account-signing-key-file="+filepath.Join(k.dir, "sa.key"),
		"--token-auth-file="+filepath.Join(k.dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		// No controller manager creates service accounts here.
		"--disable-admission-plugins=ServiceAccount",
		"--service-cluster-ip-range=10.96.0.0/24",
		"--enable-priority-and-fairness=false",
		"--v=0")
	start := time.Now()
	k.api = StartProcess(t, "kube-apiserver", cmd)
	if err := k.waitReady(60 * time.Second); err != nil {
		k.api.Stop()
		return err
	}
	t.Logf("kube-apiserver ready in %v", time.Since(start).Round(time.Millisecond))
	return nil
}

func (k *Kube) waitReady(timeout time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if exited, err := k.api.Exited(); exited {
			return fmt.Errorf("exited: %v", err)
		}
		req, _ := http.NewRequest("GET", k.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+k.token)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

// StopAPIServer stops the API server (etcd keeps the state).
func (k *Kube) StopAPIServer() {
	k.t.Helper()
	k.api.Stop()
}

// RestartAPIServer starts the API server again on the same address.
func (k *Kube) RestartAPIServer() {
	k.t.Helper()
	if err := k.startAPIServer(); err != nil {
		k.t.Fatalf("kube-apiserver not ready after a restart: %v\n%s", err, k.api.LogTail(30))
	}
}

// Ctx is a context for one API call in a test.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
