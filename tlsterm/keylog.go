package tlsterm

import (
	"bytes"
	"encoding/hex"
	"sync"
)

// keyLog is the one Config.KeyLogWriter of a Server, shared by every
// concurrent handshake. crypto/tls writes "LABEL <client random> <secret>"
// lines from the handshake's own goroutine; each line goes to the handshake
// registered under that client random (the random the driver read from the
// connection's own ClientHello). Lines for unknown randoms are dropped:
// nothing is ever written anywhere.
type keyLog struct {
	mu sync.Mutex
	m  map[[32]byte]*secrets
}

// secrets are the TLS 1.3 secrets of one handshake. Written and read only on
// that handshake's goroutine (crypto/tls calls the KeyLogWriter from it).
type secrets struct {
	serverHS, clientApp, serverApp []byte
}

func (s *secrets) wipe() {
	clear(s.serverHS)
	clear(s.clientApp)
	clear(s.serverApp)
}

// register claims a client random. It fails when another handshake in
// progress has the same one (a replayed ClientHello): its secrets would be
// indistinguishable.
func (k *keyLog) register(random [32]byte, s *secrets) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = make(map[[32]byte]*secrets)
	}
	if _, dup := k.m[random]; dup {
		return false
	}
	k.m[random] = s
	return true
}

func (k *keyLog) unregister(random [32]byte, s *secrets) {
	k.mu.Lock()
	if k.m[random] == s {
		delete(k.m, random)
	}
	k.mu.Unlock()
}

func (k *keyLog) running() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

var (
	labelServerHS  = []byte("SERVER_HANDSHAKE_TRAFFIC_SECRET")
	labelClientApp = []byte("CLIENT_TRAFFIC_SECRET_0")
	labelServerApp = []byte("SERVER_TRAFFIC_SECRET_0")
)

func (k *keyLog) Write(line []byte) (int, error) {
	// The io.Writer contract forbids touching line; it is crypto/tls's
	// fresh buffer, garbage after this call.
	f := bytes.Fields(line)
	if len(f) != 3 || hex.DecodedLen(len(f[1])) != 32 {
		return len(line), nil
	}
	var random [32]byte
	if _, err := hex.Decode(random[:], f[1]); err != nil {
		return len(line), nil
	}
	k.mu.Lock()
	s := k.m[random]
	k.mu.Unlock()
	if s == nil {
		return len(line), nil
	}
	var dst *[]byte
	switch {
	case bytes.Equal(f[0], labelServerHS):
		dst = &s.serverHS
	case bytes.Equal(f[0], labelClientApp):
		dst = &s.clientApp
	case bytes.Equal(f[0], labelServerApp):
		dst = &s.serverApp
	default:
		return len(line), nil // client handshake secret, TLS 1.2 master secret: not needed
	}
	secret := make([]byte, hex.DecodedLen(len(f[2])))
	if _, err := hex.Decode(secret, f[2]); err == nil {
		*dst = secret
	}
	return len(line), nil
}
