//go:build !unix

package caddymodule

// notInUse: Windows locks an open bbolt file against replacement itself.
func notInUse(string) error { return nil }
