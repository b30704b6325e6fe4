package caddyauth

import "github.com/caddyserver/caddy/v2"

// pgBackends shares Postgres key stores (pool, caches, listener) between
// configs, keyed by database_url, so that `caddy reload` keeps the warm
// cache and opens no new connections. A store is destroyed when the last
// config that uses it is cleaned up.
var pgBackends = caddy.NewUsagePool()

// acquirePGBackend returns the shared store for dsn, creating it if needed,
// and applies the settings of the config being provisioned.
func acquirePGBackend(dsn string, s pgSettings) (*pgBackend, error) {
	val, _, err := pgBackends.LoadOrNew(dsn, func() (caddy.Destructor, error) {
		return newPGBackend(dsn, s, pgOptions{})
	})
	if err != nil {
		return nil, err
	}
	b := val.(*pgBackend)
	b.configure(s)
	return b, nil
}

// releasePGBackend drops one config's use of the store for dsn.
func releasePGBackend(dsn string) {
	_, _ = pgBackends.Delete(dsn)
}
