// Package vmexp exposes a libcmp snapshot with VictoriaMetrics/metrics.
package vmexp

import (
	"bytes"
	"github.com/wsgate/wsgate/metrics/libcmp"
	"io"
	"net/http"
	"strconv"
	"strings"

	vm "github.com/VictoriaMetrics/metrics"
)

// vmSeries is a series name with its labels, built once (as a VictoriaMetrics user builds
// "name{label=\"value\"}" strings at registration), so that a scrape only formats values.
type vmFamily struct {
	header string   // "# HELP ...\n# TYPE ...\n"
	names  []string // per series; histograms: per bucket, then _sum, _count
	f      *libcmp.Family
}

func vmPrepare(fams []libcmp.Family) []vmFamily {
	var out []vmFamily
	for i := range fams {
		f := &fams[i]
		vf := vmFamily{f: f, header: "# HELP " + f.Name + " " + f.Help + "\n# TYPE " + f.Name + " " + f.Type + "\n"}
		for _, s := range f.Series {
			var pairs []string
			for j, l := range f.Labels {
				pairs = append(pairs, l+"="+strconv.Quote(s.LabelValues[j]))
			}
			if f.Type != "histogram" {
				name := f.Name
				if len(pairs) > 0 {
					name += "{" + strings.Join(pairs, ",") + "}"
				}
				vf.names = append(vf.names, name)
				continue
			}
			for _, b := range libcmp.Bounds(f.Name) {
				vf.names = append(vf.names, f.Name+"_bucket{"+strings.Join(append(pairs, `le="`+strconv.FormatFloat(b, 'g', -1, 64)+`"`), ",")+"}")
			}
			vf.names = append(vf.names, f.Name+"_bucket{"+strings.Join(append(pairs, `le="+Inf"`), ",")+"}")
			lab := ""
			if len(pairs) > 0 {
				lab = "{" + strings.Join(pairs, ",") + "}"
			}
			vf.names = append(vf.names, f.Name+"_sum"+lab, f.Name+"_count"+lab)
		}
		out = append(out, vf)
	}
	return out
}

func vmWrite(w io.Writer, prepared []vmFamily) {
	for _, vf := range prepared {
		io.WriteString(w, vf.header)
		k := 0
		for _, s := range vf.f.Series {
			switch vf.f.Type {
			case "counter":
				vm.WriteCounterFloat64(w, vf.names[k], s.Value)
				k++
			case "gauge":
				vm.WriteGaugeFloat64(w, vf.names[k], s.Value)
				k++
			case "histogram":
				for _, c := range s.Buckets {
					vm.WriteCounterUint64(w, vf.names[k], c)
					k++
				}
				vm.WriteCounterUint64(w, vf.names[k], s.Count) // +Inf
				vm.WriteCounterFloat64(w, vf.names[k+1], s.Sum)
				vm.WriteCounterUint64(w, vf.names[k+2], s.Count)
				k += 3
			}
		}
	}
	vm.WriteProcessMetrics(w) // go_* and process_*
	vm.WriteFDMetrics(w)      // process_open_fds, process_max_fds
}

// Handler is /metrics with VictoriaMetrics/metrics: the snapshot written through
// the library's text helpers plus its Go and process metrics.
func Handler(fams []libcmp.Family) http.Handler {
	prepared := vmPrepare(fams)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		vmWrite(&buf, prepared)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(buf.Bytes())
	})
}
