package report

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Palette gives every peer the same colour in every chart.
var Palette = []string{"#6b7280", "#2563eb", "#60a5fa", "#16a34a", "#4ade80", "#d97706", "#9333ea", "#dc2626", "#0891b2"}

const (
	svgWidth   = 760
	labelWidth = 190
	valueWidth = 120
	barHeight  = 16
	barGap     = 4
	panelHead  = 26
	panelGap   = 14
)

// SVG renders a group as stacked panels, one per metric, each with a horizontal bar per peer
// (median), a whisker for the min-max range of the runs, and the value printed at the end.
// Bars in a panel share one scale starting at zero, so lengths compare honestly.
func SVG(w io.Writer, g Group, peers []Peer, recs []Record) error {
	agg := Aggregate(recs)
	var rows []Peer
	for _, p := range peers {
		if p.Skipped == "" {
			rows = append(rows, p)
		}
	}
	panelH := panelHead + len(rows)*(barHeight+barGap)
	height := 40 + len(g.Metrics)*(panelH+panelGap)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", html.EscapeString(g.Title))
	y := 40
	plotW := float64(svgWidth - labelWidth - valueWidth)
	for _, m := range g.Metrics {
		dir := "lower is better"
		if m.HigherBetter {
			dir = "higher is better"
		}
		fmt.Fprintf(&b, `<text x="10" y="%d" font-weight="bold">%s (%s, %s)</text>`+"\n", y+16, html.EscapeString(m.Label), html.EscapeString(m.Unit), dir)
		maxV := 0.0
		for _, p := range rows {
			if a, ok := agg[p.Name][m.ID]; ok && a.N > 0 {
				maxV = math.Max(maxV, math.Max(a.Max, a.Median))
			}
		}
		for i, p := range rows {
			by := y + panelHead + i*(barHeight+barGap)
			color := Palette[peerIndex(peers, p.Name)%len(Palette)]
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelWidth-8, by+barHeight-4, html.EscapeString(p.Label))
			a, ok := agg[p.Name][m.ID]
			if !ok || a.N == 0 || maxV <= 0 {
				fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#6b7280">-</text>`+"\n", labelWidth+4, by+barHeight-4)
				continue
			}
			wMed := a.Median / maxV * plotW
			fmt.Fprintf(&b, `<rect class="bar" data-peer="%s" x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n",
				html.EscapeString(p.Name), labelWidth, by, wMed, barHeight, color)
			if a.N > 1 && a.Max > a.Min {
				x1 := float64(labelWidth) + a.Min/maxV*plotW
				x2 := float64(labelWidth) + a.Max/maxV*plotW
				cy := by + barHeight/2
				fmt.Fprintf(&b, `<path class="range" d="M%.1f %dH%.1fM%.1f %dV%dM%.1f %dV%d" stroke="#111827" stroke-width="1.2" fill="none"/>`+"\n",
					x1, cy, x2, x1, cy-4, cy+4, x2, cy-4, cy+4)
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(labelWidth)+math.Max(wMed, a.Max/maxV*plotW)+6, by+barHeight-4, FormatNum(a.Median, m.Digits))
		}
		y += panelH + panelGap
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func peerIndex(peers []Peer, name string) int {
	for i, p := range peers {
		if p.Name == name {
			return i
		}
	}
	return 0
}
