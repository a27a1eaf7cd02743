package main

import (
	"bytes"
	"testing"

	"github.com/wsgate/wsgate/loop"
)

func TestHeaderNamesFlag(t *testing.T) {
	for args, want := range map[string]loop.HeaderNamePolicy{"": loop.HeaderNamesDrop, "drop": loop.HeaderNamesDrop, "reject": loop.HeaderNamesReject} {
		var argv []string
		if args != "" {
			argv = []string{"-header-names", args}
		}
		var out bytes.Buffer
		cfg, _, err := parseFlags(argv, &out)
		if err != nil || cfg.HeaderNames != want {
			t.Fatalf("-header-names %q: %v, %v", args, cfg.HeaderNames, err)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"-header-names", "fold"}, &out); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if got := out.String(); got != "wsgate: -header-names \"fold\": want drop or reject\n" {
		t.Fatalf("output %q", got)
	}
	out.Reset()
	if run([]string{"-h"}, &out); !bytes.Contains(out.Bytes(), []byte("  -header-names string")) || !bytes.Contains(out.Bytes(), []byte(`(default "drop")`)) {
		t.Fatalf("-h does not list -header-names with its default:\n%s", out.String())
	}
}
