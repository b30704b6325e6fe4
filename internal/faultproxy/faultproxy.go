// Package faultproxy is a TCP proxy for tests that can cut, restore or slow
// down the path to a real Postgres or Redis, so outages and distant servers
// are simulated for real without touching the shared servers.
package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with traffic.
type Mode int

const (
	// Pass forwards connections to the target.
	Pass Mode = iota
	// Refuse closes every connection, new and existing: the target looks down.
	Refuse
	// Hang accepts connections and reads from them but never answers and
	// never connects to the target: the target looks hung (timeouts).
	Hang
)

// Proxy forwards TCP connections from a loopback port to a target address.
type Proxy struct {
	target   string
	listener net.Listener

	mu     sync.Mutex
	mode   Mode
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	delay atomic.Int64 // one-way latency added to every chunk, ns
}

// New starts a proxy on 127.0.0.1 (a free port) to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, listener: ln, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// Port is the proxy's listening port.
func (p *Proxy) Port() string {
	_, port, _ := net.SplitHostPort(p.Addr())
	return port
}

// SetMode switches the proxy's behaviour. Switching away from Pass closes
// every open connection, so clients see the outage at once.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	p.mode = m
	var victims []net.Conn
	if m != Pass {
		for c := range p.conns {
			victims = append(victims, c)
		}
	}
	p.mu.Unlock()
	for _, c := range victims {
		_ = c.Close()
	}
}

// SetDelay makes the target look far away: every chunk of data is held
// for d in each direction (a request and its answer take 2d more), on
// open connections too. Throughput is not limited. 0 turns it off.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Cut makes the target unreachable (Refuse) and drops open connections.
func (p *Proxy) Cut() { p.SetMode(Refuse) }

// Restore forwards traffic again.
func (p *Proxy) Restore() { p.SetMode(Pass) }

// DropConnections closes every open connection but keeps forwarding new ones.
func (p *Proxy) DropConnections() {
	p.mu.Lock()
	victims := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		victims = append(victims, c)
	}
	p.mu.Unlock()
	for _, c := range victims {
		_ = c.Close()
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.listener.Close()
	p.DropConnections()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) currentMode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.untrack(client)
	switch p.currentMode() {
	case Refuse:
		return
	case Hang:
		_, _ = io.Copy(io.Discard, client)
		return
	}
	upstream, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(upstream) {
		_ = upstream.Close()
		return
	}
	defer p.untrack(upstream)
	done := make(chan struct{}, 2)
	go func() { p.forward(upstream, client); done <- struct{}{} }()
	go func() { p.forward(client, upstream); done <- struct{}{} }()
	<-done
}

// chunk is data read from one side, due to be written to the other.
type chunk struct {
	data []byte
	due  time.Time
}

// forward copies src to dst, holding each chunk for the proxy's delay. A
// reader goroutine keeps reading meanwhile, so latency adds up only once
// per chunk, not per chunk in flight.
func (p *Proxy) forward(dst, src net.Conn) {
	chunks := make(chan chunk, 256)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(chunks)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case chunks <- chunk{data: bytes.Clone(buf[:n]), due: time.Now().Add(time.Duration(p.delay.Load()))}:
				case <-stop:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}
