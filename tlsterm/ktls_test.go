package tlsterm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/tlsrecord"
)

func TestKTLSCryptoInfoLayout(t *testing.T) {
	cases := []struct {
		suite                   uint16
		size, ivOff, ivLen      int
		keyOff, saltOff, seqOff int
		cipher                  uint16
	}{
		{tlsrecord.TLS_AES_128_GCM_SHA256, 40, 4, 8, 12, 28, 32, 51},
		{tlsrecord.TLS_AES_256_GCM_SHA384, 56, 4, 8, 12, 44, 48, 52},
		{tlsrecord.TLS_CHACHA20_POLY1305_SHA256, 56, 4, 12, 16, 48, 48, 54},
	}
	for _, tc := range cases {
		t.Run(tlsrecord.SuiteName(tc.suite), func(t *testing.T) {
			secret := bytes.Repeat([]byte{7}, map[uint16]int{0x1301: 32, 0x1302: 48, 0x1303: 32}[tc.suite])
			var st tlsrecord.State
			if err := st.Init(tc.suite, secret); err != nil {
				t.Fatal(err)
			}
			st.SetSeq(0x0102030405060708)
			b, err := KTLSCryptoInfo(&st)
			if err != nil {
				t.Fatal(err)
			}
			key, iv := st.Key()
			if len(b) != tc.size {
				t.Fatalf("size %d, want %d", len(b), tc.size)
			}
			if v := binary.NativeEndian.Uint16(b[0:]); v != 0x0304 {
				t.Fatalf("version %#x", v)
			}
			if c := binary.NativeEndian.Uint16(b[2:]); c != tc.cipher {
				t.Fatalf("cipher_type %d", c)
			}
			salt := 12 - tc.ivLen
			if !bytes.Equal(b[tc.saltOff:tc.saltOff+salt], iv[:salt]) || !bytes.Equal(b[tc.ivOff:tc.ivOff+tc.ivLen], iv[salt:]) {
				t.Fatalf("salt/iv split wrong: % x", b)
			}
			if !bytes.Equal(b[tc.keyOff:tc.keyOff+len(key)], key) {
				t.Fatal("key misplaced")
			}
			// rec_seq: the next record's sequence number, big-endian.
			if !bytes.Equal(b[tc.seqOff:tc.seqOff+8], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
				t.Fatalf("rec_seq % x", b[tc.seqOff:tc.seqOff+8])
			}
			// The kernel's nonce is (salt || iv) XOR rec_seq: the same as
			// tlsrecord's IV XOR seq, so records continue where the session
			// stopped. Check by sealing with the state at that sequence.
			nonce := append(append([]byte(nil), b[tc.saltOff:tc.saltOff+salt]...), b[tc.ivOff:tc.ivOff+tc.ivLen]...)
			for i := 0; i < 8; i++ {
				nonce[4+i] ^= b[tc.seqOff+i]
			}
			want := append([]byte(nil), iv...)
			for i := 0; i < 8; i++ {
				want[4+i] ^= byte(st.Seq() >> (56 - 8*i))
			}
			if !bytes.Equal(nonce, want) {
				t.Fatalf("kernel nonce % x, tlsrecord nonce % x", nonce, want)
			}
		})
	}
}

// The Go layouts against the kernel's own header, when a C compiler and
// linux/tls.h are there.
func TestKTLSLayoutMatchesLinuxHeader(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil || runtime.GOOS != "linux" {
		t.Skip("no C compiler")
	}
	if _, err := os.Stat("/usr/include/linux/tls.h"); err != nil {
		t.Skip("no linux/tls.h")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "l.c")
	os.WriteFile(src, []byte(`#include <stdio.h>
#include <stddef.h>
#include <linux/tls.h>
#define P(T, c) printf("%d %zu %zu %zu %zu %zu %zu\n", c, sizeof(struct T), offsetof(struct T, iv), offsetof(struct T, key), offsetof(struct T, salt), offsetof(struct T, rec_seq), sizeof(((struct T*)0)->iv))
int main(void) {
	P(tls12_crypto_info_aes_gcm_128, TLS_CIPHER_AES_GCM_128);
	P(tls12_crypto_info_aes_gcm_256, TLS_CIPHER_AES_GCM_256);
	P(tls12_crypto_info_chacha20_poly1305, TLS_CIPHER_CHACHA20_POLY1305);
	printf("%d %d %d %d\n", TLS_1_3_VERSION, TLS_TX, TLS_RX, SOL_TLS_PROBE);
	return 0;
}
`), 0o600)
	// SOL_TLS lives in the libc header; TLS_1_3_VERSION etc. in linux/tls.h.
	prog := filepath.Join(dir, "l")
	out, err := exec.Command(cc, "-DSOL_TLS_PROBE=0", "-o", prog, src).CombinedOutput()
	if err != nil {
		t.Skipf("cc failed: %v\n%s", err, out)
	}
	out, err = exec.Command(prog).Output()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range []*ktlsLayout{&layoutAES128, &layoutAES256, &layoutChaCha20} {
		got = append(got, fmt.Sprintf("%d %d %d %d %d %d %d", l.cipher, l.size, l.ivOff, l.keyOff, l.saltOff, l.seqOff, l.ivLen))
	}
	got = append(got, fmt.Sprintf("%d %d %d 0", ktlsVersion13, tlsTX, tlsRX))
	if want := strings.TrimSpace(string(out)); strings.Join(got, "\n") != want {
		t.Fatalf("layouts differ from linux/tls.h:\n ours:\n%s\n header:\n%s", strings.Join(got, "\n"), want)
	}
}

// -ktls: off never asks the kernel; auto asks once and, on this kernel
// (CONFIG_TLS unset), reports it unavailable with the reason; installing
// fails cleanly.
func TestKTLSProbe(t *testing.T) {
	if ok, err := KTLSEnabled(KTLSOff); ok || err == nil {
		t.Fatal("off enabled")
	}
	if _, err := ParseKTLSMode("on"); err == nil {
		t.Fatal("bad mode accepted")
	}
	err1 := ProbeKTLS()
	err2 := ProbeKTLS()
	ok, err3 := KTLSEnabled(KTLSAuto)
	if err1 != err2 || err2 != err3 || ok != (err1 == nil) {
		t.Fatalf("probe not cached: %v / %v / %v", err1, err2, err3)
	}
	if runtime.GOOS == "linux" && ktlsProbes.Load() != 1 {
		t.Fatalf("kernel asked %d times", ktlsProbes.Load())
	}
	t.Logf("kTLS probe: %v", err1)
	if err1 == nil {
		t.Skip("this kernel has the TLS ULP; the install path is not exercised by this test")
	}
	// Installing on a real socket fails with the same cause, not a panic.
	s, err := tlsrecord.NewSession(tlsrecord.Keys{Suite: 0x1301, ReadSecret: make([]byte, 32), WriteSecret: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := InstallKTLS(int(f.Fd()), s); err == nil {
		t.Fatal("installed kTLS on a file")
	}
	// Not at a record boundary: refused before any syscall.
	c, _ := tlsrecord.NewSession(tlsrecord.Keys{Suite: 0x1301, ReadSecret: make([]byte, 32), WriteSecret: make([]byte, 32), Client: true})
	rec, _ := c.Seal(nil, []byte("partial"))
	s.Open(rec[:7])
	if err := InstallKTLS(-1, s); !errors.Is(err, ErrKTLSNotAtBoundary) {
		t.Fatalf("partial record: %v", err)
	}
}
