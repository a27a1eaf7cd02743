//go:build !linux

package route

func processCPUNanos() int64 { return -1 }
