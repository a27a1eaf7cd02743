package metrics

import (
	"runtime/debug"
	"sync"
)

// versionOverride lets a packager stamp a version that the module system cannot know, e.g.
// go build -ldflags "-X github.com/wsgate/wsgate/metrics.versionOverride=1.4.2-3".
var versionOverride string

var buildVersion = sync.OnceValue(func() string {
	if versionOverride != "" {
		return versionOverride
	}
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(bi)
})

// BuildVersion is wsgate's version as wsgate_build_info and `wsgate -version` report it: the
// main module's version from the build info. That is the tag for `go install ...@v1.2.3`, and
// for a build in a git checkout Go (1.24 on) stamps a pseudo-version from the commit, e.g.
// "v0.0.0-20261207014711-f1a81f852d81+dirty". When the build info has no version but has VCS
// settings, the revision (first 12 hex digits, "+dirty" with uncommitted changes); else
// "(devel)" (-buildvcs=false, no repository, or a git worktree, where the go command stamps
// nothing).
func BuildVersion() string { return buildVersion() }

func versionFrom(bi *debug.BuildInfo) string {
	if bi == nil {
		return "(devel)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}
