package sdnotify

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const unitPath = "../deploy/systemd/wsgate.service"

// unit is a systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func readUnit(t *testing.T) unit {
	t.Helper()
	f, err := os.Open(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, sec := unit{}, ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			sec = strings.Trim(line, "[]")
			u[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("%s:%d: %q", unitPath, n, line)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

func (u unit) get(sec, key string) string {
	v := u[sec][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// The unit carries what the lifecycle (docs/lifecycle.md) relies on.
func TestUnitFile(t *testing.T) {
	u := readUnit(t)
	s := "Service"
	want := map[string]string{
		"Type":            "notify",
		"NotifyAccess":    "all", // MAINPID= from the successor
		"ExecReload":      "/bin/kill -HUP $MAINPID",
		"KillMode":        "control-group", // SIGTERM reaches old and new during an upgrade
		"KillSignal":      "SIGTERM",
		"DynamicUser":     "yes",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
	}
	for k, v := range want {
		if got := u.get(s, k); got != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	if !strings.Contains(u.get(s, "AmbientCapabilities"), "CAP_NET_BIND_SERVICE") ||
		!strings.Contains(u.get(s, "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE") {
		t.Error("no CAP_NET_BIND_SERVICE for :443")
	}
	if n, err := strconv.Atoi(u.get(s, "LimitNOFILE")); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE=%q", u.get(s, "LimitNOFILE"))
	}
	// Issue 12's drain defaults: -drain-delay 0, -drain-timeout 30s,
	// -close-spread 10s; systemd's SIGKILL must come after all of them.
	stop, err := time.ParseDuration(u.get(s, "TimeoutStopSec"))
	if drain := 0*time.Second + 30*time.Second + 10*time.Second; err != nil || stop <= drain {
		t.Errorf("TimeoutStopSec=%q, want more than %v", u.get(s, "TimeoutStopSec"), drain)
	}
	if !strings.Contains(u.get(s, "RestrictAddressFamilies"), "AF_UNIX") {
		t.Error("the hand-off and the notify socket need AF_UNIX")
	}
	if len(u[s]["SystemCallFilter"]) == 0 || u[s]["SystemCallFilter"][0] != "@system-service" {
		t.Errorf("SystemCallFilter=%q: splice, execve, setrlimit and SCM_RIGHTS are in @system-service", u[s]["SystemCallFilter"])
	}
	if u.get(s, "ProcSubset") == "pid" {
		t.Error("ProcSubset=pid hides /proc/sys/net/ipv4/tcp_migrate_req")
	}
	if u.get("Install", "WantedBy") == "" {
		t.Error("no [Install] WantedBy")
	}
}

// systemd-analyze verify accepts the unit (apt-get install systemd).
func TestUnitFileVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart is executable: point it at one.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "wsgate.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/wsgate", exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if out, err := exec.Command(sa, "security", "--offline=true", p).CombinedOutput(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Log(lines[len(lines)-1])
	}
}
