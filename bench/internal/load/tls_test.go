package load

import (
	"context"
	"crypto/tls"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/bench/internal/backend"
)

// The TLS generators against a TLS server in front of the bench backend's handler: https
// keep-alive, full and resumed handshakes (resumption really happens), wss bulk and idle.
func TestSmokeTLSGenerators(t *testing.T) {
	srv := httptest.NewUnstartedServer(backend.Handler())
	srv.EnableHTTP2 = false
	srv.StartTLS()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	ctx := context.Background()
	res, err := RunHTTP(ctx, HTTPConfig{Addr: addr, Path: "/100", Conns: 2, Duration: dur(100e6, 300e6), BodySize: backend.SmallBody, TLS: ClientTLS(tls.VersionTLS13)})
	if err != nil || res.Requests == 0 || res.Errors != 0 {
		t.Fatalf("https: %+v %v", res, err)
	}
	for _, resume := range []bool{false, true} {
		hs, err := RunTLSHandshakes(ctx, TLSHandshakeConfig{Addr: addr, Workers: 2, Duration: dur(200e6, 500e6), Resume: resume, TLS: ClientTLS(tls.VersionTLS13)})
		if err != nil || hs.Handshakes < 2 || hs.Errors != 0 {
			t.Fatalf("handshakes (resume %v): %+v %v", resume, hs, err)
		}
		if resume != (hs.Resumed >= hs.Handshakes-2) || (!resume && hs.Resumed != 0) {
			t.Fatalf("resume %v: %d of %d resumed", resume, hs.Resumed, hs.Handshakes)
		}
	}
	b, err := RunBulk(ctx, BulkConfig{Addr: addr, Up: true, Conns: 2, Duration: dur(100e6, 300e6), TLS: ClientTLS(tls.VersionTLS13)})
	if err != nil || b.Bytes == 0 {
		t.Fatalf("wss bulk: %+v %v", b, err)
	}
	set, err := OpenIdleTLS(ctx, addr, 10, 4, nil, ClientTLS(tls.VersionTLS13))
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if ok, err := set.PingAll(ctx, 4, dur(5e9, 5e9)); ok != 10 || err != nil {
		t.Fatalf("wss idle: %d/10 %v", ok, err)
	}
}
