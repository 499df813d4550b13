package node

import "io"

// Read modes (Config.ReadMode).
const (
	// ReadPoll reads connections from an epoll loop (Linux): no goroutine
	// and no buffer per idle connection. Elsewhere it falls back to
	// ReadGoroutine.
	ReadPoll = "poll"
	// ReadGoroutine reads each connection from its own goroutine with
	// blocking reads: portable, and more memory per connection.
	ReadGoroutine = "goroutine"
)

// reader reads authenticated and authenticating connections and hands the
// bytes to conn.consume.
type reader interface {
	// add starts reading c (its raw descriptor is set).
	add(c *conn) error
	// remove stops reading c; it runs before c's socket is closed.
	remove(c *conn)
	// close stops the reader.
	close()
}

// goroutineReader gives every connection a reading goroutine.
type goroutineReader struct{}

func (goroutineReader) add(c *conn) error {
	c.n.spawn(func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.nc.Read(buf)
			if n > 0 && !c.consume(buf[:n]) {
				return
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				c.readFailed(err)
				return
			}
		}
	})
	return nil
}

func (goroutineReader) remove(*conn) {}
func (goroutineReader) close()       {}
