package accesslog

import (
	"io"
	"log/slog"
)

// NewHandler returns the slog.Handler for wsgate's own log in format f, writing to w
// (-log-format applies to both logs, so one parser reads both).
func NewHandler(w io.Writer, f Format, opts *slog.HandlerOptions) slog.Handler {
	if f == JSON {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}
