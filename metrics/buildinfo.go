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
// module version when the binary was built from a tagged module (go install ...@v1.2.3), else
// the VCS revision it was built from (first 12 hex digits, "+dirty" with uncommitted changes),
// else "(devel)" (a build with -buildvcs=false or outside a repository).
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
