//go:build !unix

package caddyusage

import "os"

// lockDir does not lock on systems without flock: give each gateway its own
// spool_dir.
func lockDir(string) (*os.File, error) { return nil, nil }

func unlockDir(*os.File) error { return nil }
