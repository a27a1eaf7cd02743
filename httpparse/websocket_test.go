package httpparse

import (
	"crypto/sha1"
	"encoding/base64"
	"math/rand/v2"
	"strings"
	"testing"
)

const wsHandshake = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n" +
	"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n"

func TestCheckWebSocketRequest(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(wsHandshake, old) {
			t.Fatalf("%q not in handshake", old)
		}
		return strings.Replace(wsHandshake, old, new, 1)
	}
	cases := []struct {
		name   string
		in     string
		status int
	}{
		{"RFC 6455 example", wsHandshake, 0},
		{"firefox connection list", replace("Connection: Upgrade", "Connection: keep-alive, Upgrade"), 0},
		{"case-insensitive tokens", replace("Upgrade: websocket", "Upgrade: WebSocket"), 0},
		{"POST", replace("GET /chat", "POST /chat"), 400},
		{"HTTP/1.0", replace("HTTP/1.1", "HTTP/1.0"), 400},
		{"no upgrade", replace("Upgrade: websocket\r\n", ""), 400},
		{"upgrade h2c", replace("Upgrade: websocket", "Upgrade: h2c"), 400},
		{"no connection upgrade", replace("Connection: Upgrade", "Connection: keep-alive"), 400},
		{"version 8", replace("Version: 13", "Version: 8"), 426},
		{"version list", replace("Version: 13", "Version: 13, 8"), 426},
		{"no version", replace("Sec-WebSocket-Version: 13\r\n", ""), 426},
		{"two versions", replace("Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n"), 426},
		{"no key", replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400},
		{"key 15 bytes", replace("dGhlIHNhbXBsZSBub25jZQ==", base64.StdEncoding.EncodeToString(make([]byte, 15))), 400},
		{"key 17 bytes", replace("dGhlIHNhbXBsZSBub25jZQ==", base64.StdEncoding.EncodeToString(make([]byte, 17))), 400},
		{"key unpadded", replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ"), 400},
		{"key non-canonical tail bits", replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="), 400},
		{"key bad alphabet", replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZ-=="), 400},
		{"two keys", replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), 400},
	}
	for _, c := range cases {
		var p Parser
		var req Request
		if _, err := p.ParseRequest([]byte(c.in), &req); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := StatusOf(CheckWebSocketRequest(&req)); got != c.status {
			t.Errorf("%s: status %d, want %d", c.name, got, c.status)
		}
	}
}

// TestValidKeyMatchesStrictDecoder checks the hand-written key check against
// encoding/base64's strict decoder on random and mutated keys.
func TestValidKeyMatchesStrictDecoder(t *testing.T) {
	strict := base64.StdEncoding.Strict()
	rng := rand.New(rand.NewPCG(5, 6))
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \x00"
	for i := range 50000 {
		var key []byte
		if i%2 == 0 {
			raw := make([]byte, 16)
			for j := range raw {
				raw[j] = byte(rng.IntN(256))
			}
			key = []byte(base64.StdEncoding.EncodeToString(raw))
			key[rng.IntN(len(key))] = alphabet[rng.IntN(len(alphabet))]
		} else {
			key = make([]byte, 22+rng.IntN(4))
			for j := range key {
				key[j] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		var raw [32]byte
		n, err := strict.Decode(raw[:], key)
		want := err == nil && n == 16 && len(key) == 24
		if got := validKey(key); got != want {
			t.Fatalf("validKey(%q) = %v, strict decoder says %v", key, got, want)
		}
	}
}

func TestAccept(t *testing.T) {
	// RFC 6455 section 1.3.
	key, want := []byte("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
	if got := string(AppendAccept(nil, key)); got != want {
		t.Fatalf("AppendAccept = %q", got)
	}
	if got := string(AppendAccept([]byte("X: "), key)); got != "X: "+want {
		t.Fatalf("AppendAccept keeps prefix: %q", got)
	}
	if !VerifyAccept(key, []byte(want)) {
		t.Fatal("VerifyAccept rejects the RFC example")
	}
	for _, bad := range []string{"", want[:27], want + "=", strings.ToLower(want), "s3pPLMBiTxaQ9kYGzzhZRbK+xOp="} {
		if VerifyAccept(key, []byte(bad)) {
			t.Fatalf("VerifyAccept accepts %q", bad)
		}
	}
	// Long keys take the streaming path and must agree with a direct hash.
	long := []byte(strings.Repeat("k", 200))
	sum := sha1.Sum(append(append([]byte{}, long...), websocketGUID...))
	if got := string(AppendAccept(nil, long)); got != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatal("long key accept differs")
	}
}
