//go:build !linux

package main

// protectProcess is Linux-only: elsewhere Loom's process is left as it is.
func protectProcess() (bool, error) { return false, nil }
