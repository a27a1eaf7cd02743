package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/wsgate/wsgate/metrics"
)

// printVersion writes what the binary knows about its build. Its first line's version is
// metrics.BuildVersion(), the value wsgate_build_info{version} reports, and its go line the Go
// version wsgate_build_info{goversion} reports: one source for both.
func printVersion(w io.Writer) {
	bi, _ := debug.ReadBuildInfo()
	io.WriteString(w, versionText(metrics.BuildVersion(), runtime.Version(), bi, runtime.GOOS+"/"+runtime.GOARCH))
}

// versionText formats build information:
//
//	wsgate v1.2.3                             (go install ...@v1.2.3: the module version)
//	wsgate v0.0.0-20261207014711-f1a81f852d81 (go build in a clone: Go's pseudo-version)
//	wsgate (devel)                            (nothing stamped: -buildvcs=false, a git worktree)
//	revision 1f2e3d4c... 2026-12-07T01:00:00Z (modified)
//	go go1.26.8 linux/amd64
//
// A build without VCS stamping says so instead of a revision.
func versionText(version, goVersion string, bi *debug.BuildInfo, platform string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "wsgate %s\n", version)
	settings := map[string]string{}
	if bi != nil {
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
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
	} else if version == "(devel)" {
		b.WriteString("revision unknown (built without VCS information)\n")
	}
	fmt.Fprintf(&b, "go %s %s\n", goVersion, platform)
	return b.String()
}
