package sqlitedlock

// OpenMemory exposes openMemory to the external tests.
var OpenMemory = openMemory
