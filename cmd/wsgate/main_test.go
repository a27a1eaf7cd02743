package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBadFlagValueIsOneLineAndExit2(t *testing.T) {
	cases := map[string][]string{
		"not a duration":   {"-header-timeout", "soon"},
		"not a number":     {"-loops", "many"},
		"zero loops":       {"-loops", "0"},
		"negative timeout": {"-dial-timeout", "-1s"},
		"bad log level":    {"-log-level", "chatty"},
		"unknown flag":     {"-frobnicate"},
		"stray argument":   {"extra"},
		"empty backend":    {"-backend", ""},
		"tiny head limit":  {"-max-head-bytes", "10"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(args, &out)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, out.String())
			}
			// The flag package prints usage after its own parse errors; our validation errors
			// are exactly one line. Either way the first line names the problem.
			first, _, _ := strings.Cut(out.String(), "\n")
			if first == "" {
				t.Fatalf("no error line; output:\n%s", out.String())
			}
		})
	}
}

func TestValidationErrorIsExactlyOneLine(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-loops", "0"}, &out); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if got := out.String(); got != "wsgate: -loops 0: want 1 or more\n" {
		t.Fatalf("output %q", got)
	}
}

func TestHelpListsEveryFlagWithDefaults(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-h"}, &out); code != 0 {
		t.Fatalf("-h exit code %d, want 0", code)
	}
	for _, name := range []string{"-listen", "-backend", "-loops", "-preserve-host", "-forwarded",
		"-header-timeout", "-idle-timeout", "-dial-timeout", "-response-timeout", "-backend-idle",
		"-max-conns", "-max-head-bytes", "-log-level", "-tunnel-loops", "-splice", "-pipe-size",
		"-pipe-pool-max", "-tunnel-idle-timeout", "-tunnel-fin-timeout"} {
		if !strings.Contains(out.String(), "  "+name) {
			t.Errorf("-h does not list %s", name)
		}
	}
	if !strings.Contains(out.String(), "(default") {
		t.Errorf("-h shows no defaults:\n%s", out.String())
	}
}

func TestFlagsReachConfig(t *testing.T) {
	var out bytes.Buffer
	cfg, _, err := parseFlags([]string{"-listen", "127.0.0.1:9", "-backend", "127.0.0.1:10",
		"-preserve-host=false", "-splice=false", "-tunnel-fin-timeout", "7s", "-header-timeout", "3s"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9" || cfg.Backend != "127.0.0.1:10" || cfg.PreserveHost ||
		cfg.Tunnel.Splice || cfg.Tunnel.FinTimeout != 7*time.Second || cfg.HeaderTimeout != 3*time.Second {
		t.Fatalf("config not taken from flags: %+v", cfg)
	}
}
