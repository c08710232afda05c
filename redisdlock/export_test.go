package redisdlock

// QueueKeys returns the Redis keys of key's waiting queue and its waiters'
// deadlines, for tests.
func (d *Driver) QueueKeys(key string) (queue, waits string) {
	all := d.ks.allKeys(key)
	return all[3], all[4]
}

// ID returns the driver's waiter id, as it appears in queues.
func (d *Driver) ID() string { return d.id }

// SetListBatch sets the size of List's batches (SCAN COUNT and pipeline
// length) until the returned function restores it, for tests.
func SetListBatch(n int) (restore func()) {
	old := listBatch
	listBatch = n
	return func() { listBatch = old }
}

// Wakes returns how many wake-ups (release announcements that may be for
// this client) the driver's subscription to key's releases has had, for
// tests; 0 when it is not subscribed.
func (d *Driver) Wakes(key string) uint64 {
	n := d.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.chans[d.ks.channel(key)]; w != nil {
		return w.wakes
	}
	return 0
}
