package tlsterm

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"os"
	"strings"
	"testing"
)

func TestCertStoreSNI(t *testing.T) {
	dir := t.TempDir()
	def := issue(t, dir, "default", false, "default.test")
	api := issue(t, dir, "api", true, "api.example.test", "API2.example.test")
	wild := issue(t, dir, "wild", false, "*.example.test")
	store, err := LoadCerts(def, api, wild)
	if err != nil {
		t.Fatal(err)
	}
	for name, wantFile := range map[string]string{
		"":                  "default",
		"default.test":      "default",
		"api.example.test":  "api",
		"API.Example.Test":  "api", // ASCII case-insensitive
		"api2.example.test": "api",
		"api.example.test.": "api", // trailing dot
		"www.example.test":  "wild",
		"a.b.example.test":  "default", // a wildcard covers one label only
		"example.test":      "default",
		"unknown.test":      "default",
		"K\u212aLVIN.test":  "default", // Kelvin sign: no Unicode folding
	} {
		c := store.Lookup(name)
		var want *tls.Certificate
		switch wantFile {
		case "default":
			want = store.cur.Load().certs[0]
		case "api":
			want = store.cur.Load().certs[1]
		case "wild":
			want = store.cur.Load().certs[2]
		}
		if c != want {
			t.Errorf("%q: got %v, want the %s certificate", name, c.Leaf.DNSNames, wantFile)
		}
	}
	if _, ok := store.cur.Load().certs[1].PrivateKey.(*rsa.PrivateKey); !ok {
		t.Fatal("RSA key not loaded")
	}
	if _, ok := store.cur.Load().certs[0].PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Fatal("ECDSA key not loaded")
	}
}

// SNI picks the certificate over real handshakes, with an ECDSA and an RSA
// certificate, TLS 1.3 and 1.2.
func TestCertBySNIHandshake(t *testing.T) {
	dir := t.TempDir()
	store, err := LoadCerts(issue(t, dir, "ec", false, "localhost"), issue(t, dir, "rsa", true, "rsa.test"))
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, Config{Certs: store})
	tl := listen(t, srv, harnessOpts{})
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for name, rsaWant := range map[string]bool{"localhost": false, "rsa.test": true} {
			cfg := clientConfig(t)
			cfg.ServerName = name
			cfg.MaxVersion = v
			st := echo(t, tl.addr(), cfg, "sni")
			tl.next(t)
			_, isRSA := st.PeerCertificates[0].PublicKey.(*rsa.PublicKey)
			if isRSA != rsaWant || st.PeerCertificates[0].DNSNames[0] != name {
				t.Fatalf("%s over %#x: got %v (RSA %v)", name, v, st.PeerCertificates[0].DNSNames, isRSA)
			}
		}
	}
}

// Reload re-reads the same files; a bad file is refused with its name and
// the old certificate stays; a connection established before keeps working.
func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	pair := issue(t, dir, "site", false, "localhost")
	store, err := LoadCerts(pair)
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, Config{Certs: store})
	tl := listen(t, srv, harnessOpts{})
	old, err := tls.Dial("tcp", tl.addr(), clientConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldSerial := old.ConnectionState().PeerCertificates[0].SerialNumber

	// A corrupt certificate file: refused, named, old one kept.
	good, _ := os.ReadFile(pair.CertFile)
	os.WriteFile(pair.CertFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), 0o600)
	err = store.Reload()
	if err == nil || !strings.Contains(err.Error(), pair.CertFile) {
		t.Fatalf("reload of a bad file: %v", err)
	}
	if st := echo(t, tl.addr(), clientConfig(t), "x"); st.PeerCertificates[0].SerialNumber.Cmp(oldSerial) != 0 {
		t.Fatal("certificate changed after a failed reload")
	}
	tl.next(t)
	// A missing key file: named too.
	os.WriteFile(pair.CertFile, good, 0o600)
	os.Rename(pair.KeyFile, pair.KeyFile+".gone")
	if err := store.Reload(); err == nil || !strings.Contains(err.Error(), pair.KeyFile) {
		t.Fatalf("reload without the key: %v", err)
	}
	os.Rename(pair.KeyFile+".gone", pair.KeyFile)
	// A key that does not match: both named.
	other := issue(t, t.TempDir(), "other", false, "localhost")
	otherKey, _ := os.ReadFile(other.KeyFile)
	goodKey, _ := os.ReadFile(pair.KeyFile)
	os.WriteFile(pair.KeyFile, otherKey, 0o600)
	if err := store.Reload(); err == nil || !strings.Contains(err.Error(), pair.KeyFile) || !strings.Contains(err.Error(), pair.CertFile) {
		t.Fatalf("reload with a mismatched key: %v", err)
	}
	os.WriteFile(pair.KeyFile, goodKey, 0o600)

	// New files at the same paths: the next handshake gets the new one.
	issue(t, dir, "site", false, "localhost")
	if err := store.Reload(); err != nil {
		t.Fatal(err)
	}
	st := echo(t, tl.addr(), clientConfig(t), "y")
	tl.next(t)
	if st.PeerCertificates[0].SerialNumber.Cmp(oldSerial) == 0 {
		t.Fatal("reload did not take")
	}
	// The connection established before still works.
	old.SetDeadline(timeIn(10))
	old.Write([]byte("still here"))
	buf := make([]byte, 10)
	if _, err := readFull(old, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("established connection after reload: %q %v", buf, err)
	}
}

func TestLoadCertsErrors(t *testing.T) {
	if _, err := LoadCerts(); err == nil {
		t.Fatal("no pairs accepted")
	}
	if _, err := LoadCerts(CertPair{"/nonexistent.crt", "/nonexistent.key"}); err == nil || !strings.Contains(err.Error(), "/nonexistent.crt") {
		t.Fatalf("missing file: %v", err)
	}
}

// Replace swaps in another store's files and certificates at once: the next
// handshake gets the new certificate, a connection established before keeps
// working, Reload afterwards re-reads the new files, and SameCertificates
// tells a changed chain from an unchanged one.
func TestCertReplace(t *testing.T) {
	dir := t.TempDir()
	first := issue(t, dir, "first", false, "localhost")
	store, err := LoadCerts(first)
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, Config{Certs: store})
	tl := listen(t, srv, harnessOpts{})
	old, err := tls.Dial("tcp", tl.addr(), clientConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldSerial := old.ConnectionState().PeerCertificates[0].SerialNumber

	again, err := LoadCerts(first)
	if err != nil {
		t.Fatal(err)
	}
	if !store.SameCertificates(again) {
		t.Fatal("the same files read twice differ")
	}
	second := issue(t, dir, "second", false, "localhost", "second.example")
	next, err := LoadCerts(second)
	if err != nil {
		t.Fatal(err)
	}
	if store.SameCertificates(next) {
		t.Fatal("another certificate counts as the same")
	}
	store.Replace(next)
	if p := store.Pairs(); len(p) != 1 || p[0] != second {
		t.Fatalf("pairs after Replace: %v, want %v", p, second)
	}
	st := echo(t, tl.addr(), clientConfig(t), "y")
	tl.next(t)
	if st.PeerCertificates[0].SerialNumber.Cmp(oldSerial) == 0 {
		t.Fatal("Replace did not take")
	}
	if got := store.Names(); len(got) != 2 || got[1] != "second.example" {
		t.Fatalf("names after Replace: %v", got)
	}
	// Reload reads the replacing store's files now: a bad one there is named.
	os.WriteFile(second.KeyFile, []byte("not a key"), 0o600)
	if err := store.Reload(); err == nil || !strings.Contains(err.Error(), second.KeyFile) {
		t.Fatalf("reload after Replace: %v", err)
	}
	old.SetDeadline(timeIn(10))
	old.Write([]byte("still here"))
	buf := make([]byte, 10)
	if _, err := readFull(old, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("established connection after Replace: %q %v", buf, err)
	}
}
