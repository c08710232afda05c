package cli

// The backends the dlock command can open, by URL scheme.
import (
	_ "github.com/dlock-go/dlock/etcddlock"
	_ "github.com/dlock-go/dlock/memdlock"
	_ "github.com/dlock-go/dlock/mysqldlock"
	_ "github.com/dlock-go/dlock/pgdlock"
	_ "github.com/dlock-go/dlock/redisdlock"
	_ "github.com/dlock-go/dlock/redlock"
	_ "github.com/dlock-go/dlock/sqlitedlock"
	_ "github.com/dlock-go/dlock/zkdlock"
)
