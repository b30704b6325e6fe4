package caddyauth

import "crypto/sha256"

func sha256Of(s string) KeyHash { return sha256.Sum256([]byte(s)) }
