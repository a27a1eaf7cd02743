package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// printVersion writes what the binary knows about its build (runtime/debug.ReadBuildInfo).
func printVersion(w io.Writer) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintf(w, "wsgate (no build information)\ngo %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return
	}
	io.WriteString(w, versionText(bi, runtime.GOOS+"/"+runtime.GOARCH))
}

// versionText formats build information:
//
//	wsgate v1.2.3                          (go install ...@v1.2.3: the module version)
//	wsgate devel                           (built from a checkout)
//	revision 1f2e3d4c... 2026-12-07T01:00:00Z (modified)
//	go go1.26.8 linux/amd64
//
// A build without VCS stamping (-buildvcs=false, or a git worktree, which the go command does
// not recognise) says so instead of a revision.
func versionText(bi *debug.BuildInfo, platform string) string {
	var b strings.Builder
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	fmt.Fprintf(&b, "wsgate %s\n", v)
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, "revision %s", rev)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, " %s", t)
		}
		if settings["vcs.modified"] == "true" {
			b.WriteString(" (modified)")
		}
		b.WriteByte('\n')
	} else if v == "devel" {
		b.WriteString("revision unknown (built without VCS information)\n")
	}
	fmt.Fprintf(&b, "go %s %s\n", bi.GoVersion, platform)
	return b.String()
}
