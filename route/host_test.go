package route

import "testing"

func TestHasUpper(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 11; pos++ {
			b := []byte("abcdefghijk")
			b[pos] = byte(c)
			want := 'A' <= c && c <= 'Z'
			if got := hasUpper(b); got != want {
				t.Fatalf("hasUpper(%q) = %v", b, got)
			}
		}
	}
	if hasUpper([]byte("\xc1\xda\xe0@[`{")) {
		t.Fatal("bytes next to the range and high bytes count as upper case")
	}
}
