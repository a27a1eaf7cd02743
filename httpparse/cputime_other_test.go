//go:build !linux

package httpparse

func processCPUNanos() int64 { return -1 }
