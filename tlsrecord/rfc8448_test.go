package tlsrecord

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// RFC 8448 section 3 ("Simple 1-RTT Handshake"), TLS_AES_128_GCM_SHA256: the
// application traffic secrets, the server's derived key and IV, and the
// complete records both sides send after the handshake. The server's
// NewSessionTicket is its first record under the application key, so its
// application data goes out with sequence number 1: the trace itself shows
// that the write sequence is not 0 after a ticket.
var (
	rfcClientAppSecret = unhex(`9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87
		f7 92 eb b7 c1 75 04 a5`)
	rfcServerAppSecret = unhex(`a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a
		4b 4f 1f 3f cb 63 16 43`)
	rfcServerAppKey = unhex(`9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56`)
	rfcServerAppIV  = unhex(`cf 78 2b 88 dd 83 54 9a ad f1 e9 84`)

	rfcServerTicketRecord = unhex(`17 03 03 00 de 3a 6b 8f 90 41 4a 97 d6 95 9c 34 87 68 0d e5 13 4a 2b 24
		0e 6c ff ac 11 6e 95 d4 1d 6a f8 f6 b5 80 dc f3 d1 1d 63 c7 58 db 28 9a
		01 59 40 25 2f 55 71 3e 06 1d c1 3e 07 88 91 a3 8e fb cf 57 53 ad 8e f1
		70 ad 3c 73 53 d1 6d 9d a7 73 b9 ca 7f 2b 9f a1 b6 c0 d4 a3 d0 3f 75 e0
		9c 30 ba 1e 62 97 2a c4 6f 75 f7 b9 81 be 63 43 9b 29 99 ce 13 06 46 15
		13 98 91 d5 e4 c5 b4 06 f1 6e 3f c1 81 a7 7c a4 75 84 00 25 db 2f 0a 77
		f8 1b 5a b0 5b 94 c0 13 46 75 5f 69 23 2c 86 51 9d 86 cb ee ac 87 aa c3
		47 d1 43 f9 60 5d 64 f6 50 db 4d 02 3e 70 e9 52 ca 49 fe 51 37 12 1c 74
		bc 26 97 68 7e 24 87 46 d6 df 35 30 05 f3 bc e1 86 96 12 9c 81 53 55 6b
		3b 6c 67 79 b3 7b f1 59 85 68 4f`)
	rfcClientAppRecord = unhex(`17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea
		42 f9 14 aa 66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b
		62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4`)
	rfcServerAppRecord = unhex(`17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc
		32 25 d0 5f 82 aa 1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8
		fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d`)
	rfcClientAlertRecord = unhex(`17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3`)
	rfcServerAlertRecord = unhex(`17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9`)
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// rfcPayload is the 50 bytes 00 01 .. 31 both sides send.
func rfcPayload() []byte {
	p := make([]byte, 50)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

func TestRFC8448TrafficKeys(t *testing.T) {
	key, iv, err := TrafficKeys(TLS_AES_128_GCM_SHA256, rfcServerAppSecret)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, rfcServerAppKey) || !bytes.Equal(iv, rfcServerAppIV) {
		t.Fatalf("server application key/iv = %x / %x, want %x / %x", key, iv, rfcServerAppKey, rfcServerAppIV)
	}
	var s State
	if err := s.Init(TLS_AES_128_GCM_SHA256, rfcServerAppSecret); err != nil {
		t.Fatal(err)
	}
	k, v := s.Key()
	if !bytes.Equal(k, rfcServerAppKey) || !bytes.Equal(v, rfcServerAppIV) {
		t.Fatalf("State.Key = %x / %x", k, v)
	}
}

// The client's records: seal the known payload and close_notify and compare
// every byte; open them on the server side.
func TestRFC8448ClientRecords(t *testing.T) {
	client, err := NewSession(Keys{Suite: TLS_AES_128_GCM_SHA256, ReadSecret: rfcServerAppSecret, WriteSecret: rfcClientAppSecret, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.Seal(nil, rfcPayload())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, rfcClientAppRecord) {
		t.Fatalf("client application record\n got %x\nwant %x", got, rfcClientAppRecord)
	}
	got, err = client.AppendCloseNotify(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, rfcClientAlertRecord) {
		t.Fatalf("client close_notify record\n got %x\nwant %x", got, rfcClientAlertRecord)
	}

	server, err := NewSession(Keys{Suite: TLS_AES_128_GCM_SHA256, ReadSecret: rfcClientAppSecret, WriteSecret: rfcServerAppSecret, WriteSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	in := append(append([]byte(nil), rfcClientAppRecord...), rfcClientAlertRecord...)
	n, plain, ev, err := server.Open(in)
	if err != nil || n != len(rfcClientAppRecord) || ev != EventNone || !bytes.Equal(plain, rfcPayload()) {
		t.Fatalf("open client data: n=%d plain=%x ev=%v err=%v", n, plain, ev, err)
	}
	in = in[n:]
	n, plain, ev, err = server.Open(in)
	if err != nil || n != len(rfcClientAlertRecord) || ev != EventCloseNotify || plain != nil {
		t.Fatalf("open client close_notify: n=%d plain=%x ev=%v err=%v", n, plain, ev, err)
	}
	if !server.ReadClosed() {
		t.Fatal("close_notify did not close the read side")
	}
}

// The server's records: the ticket opens at sequence 0 on the client side,
// and the server's own data and close_notify, sealed from sequence 1 (the
// write sequence established after the ticket), match the trace byte for byte.
func TestRFC8448ServerRecords(t *testing.T) {
	client, err := NewSession(Keys{Suite: TLS_AES_128_GCM_SHA256, ReadSecret: rfcServerAppSecret, WriteSecret: rfcClientAppSecret, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	ticket := append([]byte(nil), rfcServerTicketRecord...)
	n, plain, ev, err := client.Open(ticket)
	if err != nil || n != len(rfcServerTicketRecord) || ev != EventSessionTicket || plain != nil {
		t.Fatalf("open ticket: n=%d ev=%v err=%v", n, ev, err)
	}
	// Re-seal the ticket's plaintext with a fresh server state at sequence 0:
	// same bytes, so the handshake-type inner content and zero padding are right.
	var rs State
	if err := rs.Init(TLS_AES_128_GCM_SHA256, rfcServerAppSecret); err != nil {
		t.Fatal(err)
	}
	typ, content, _, err := rs.Open(append([]byte(nil), rfcServerTicketRecord...))
	if err != nil || typ != Handshake || content[0] != TypeNewSessionTicket {
		t.Fatalf("ticket content: type %v err %v", typ, err)
	}
	var ws State
	if err := ws.Init(TLS_AES_128_GCM_SHA256, rfcServerAppSecret); err != nil {
		t.Fatal(err)
	}
	resealed, err := ws.AppendRecord(nil, Handshake, content)
	if err != nil || !bytes.Equal(resealed, rfcServerTicketRecord) {
		t.Fatalf("resealed ticket differs (err %v)\n got %x\nwant %x", err, resealed, rfcServerTicketRecord)
	}

	server, err := NewSession(Keys{Suite: TLS_AES_128_GCM_SHA256, ReadSecret: rfcClientAppSecret, WriteSecret: rfcServerAppSecret, WriteSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := server.Seal(nil, rfcPayload())
	if err != nil || !bytes.Equal(got, rfcServerAppRecord) {
		t.Fatalf("server application record (err %v)\n got %x\nwant %x", err, got, rfcServerAppRecord)
	}
	got, err = server.AppendCloseNotify(nil)
	if err != nil || !bytes.Equal(got, rfcServerAlertRecord) {
		t.Fatalf("server close_notify (err %v)\n got %x\nwant %x", err, got, rfcServerAlertRecord)
	}
	if _, err := server.Seal(nil, []byte("x")); err != ErrWriteClosed {
		t.Fatalf("seal after close_notify: %v", err)
	}

	// The client reads them in order after the ticket.
	in := append(append([]byte(nil), rfcServerAppRecord...), rfcServerAlertRecord...)
	n, plain, ev, err = client.Open(in)
	if err != nil || !bytes.Equal(plain, rfcPayload()) {
		t.Fatalf("client open server data: n=%d ev=%v err=%v", n, ev, err)
	}
	if _, _, ev, err = client.Open(in[n:]); err != nil || ev != EventCloseNotify {
		t.Fatalf("client open server close_notify: ev=%v err=%v", ev, err)
	}

	// Sealing the server's data at sequence 0 (as a layer that assumed 0 after
	// the ticket would) gives other bytes, which the client cannot open.
	wrong, _ := NewSession(Keys{Suite: TLS_AES_128_GCM_SHA256, ReadSecret: rfcClientAppSecret, WriteSecret: rfcServerAppSecret})
	bad, _ := wrong.Seal(nil, rfcPayload())
	if bytes.Equal(bad, rfcServerAppRecord) {
		t.Fatal("sequence 0 produced the sequence-1 record")
	}
}
