package sqlitedlock

import "github.com/dlock-go/dlock/driver"

// OpenMemory exposes openMemory to the external tests.
var OpenMemory = openMemory

// BatchStatements returns the number of statements d's RefreshBatch has
// sent.
func BatchStatements(d driver.Locker) int64 {
	return d.(*sqliteDriver).batchStatements.Load()
}

// BatchRows is the number of locks one refresh statement carries.
const BatchRows = batchRows
