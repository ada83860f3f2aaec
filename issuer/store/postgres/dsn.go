package postgres

import (
	"errors"
	"regexp"

	"github.com/jackc/pgx/v5/pgconn"
)

// notAllowedKey reads the key pgconn names when ConnStringAllowedKeys
// refuses it.
var notAllowedKey = regexp.MustCompile(`connection string key "([^"]*)" is not in ConnStringAllowedKeys`)

// DSNKeys returns the parameter keys a DSN states itself (not those the
// environment supplies), read by pgx, in the spelling pgx reports:
// "password" for a URL's userinfo password as for a password parameter.
// It stops at the first pgx would refuse for another reason.
func DSNKeys(dsn string) (map[string]bool, error) {
	keys := map[string]bool{}
	allowed := []string{}
	for range 256 {
		_, err := pgconn.ParseConfigWithOptions(dsn, pgconn.ParseConfigOptions{ConnStringAllowedKeys: allowed})
		var pe *pgconn.ParseConfigError
		if err == nil || !errors.As(err, &pe) {
			return keys, nil
		}
		m := notAllowedKey.FindStringSubmatch(err.Error())
		if m == nil {
			if len(allowed) == 0 {
				return nil, errors.New("the dsn is not one pgx can read")
			}
			return keys, nil // read to the end; pgx objects to something else
		}
		if keys[m[1]] {
			return nil, errors.New("the dsn's keys cannot be read")
		}
		keys[m[1]] = true
		allowed = append(allowed, m[1])
	}
	return nil, errors.New("the dsn states too many keys")
}
