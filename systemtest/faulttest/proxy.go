package faulttest

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// LinkMode is the state of the link between two nodes.
type LinkMode int

const (
	// LinkUp forwards bytes both ways.
	LinkUp LinkMode = iota
	// LinkDrop closes the connections open across the link and refuses
	// new ones at once (a peer that answers with resets).
	LinkDrop
	// LinkBlackhole holds every byte sent across the link, on open and new
	// connections alike, until the link comes up again (packets dropped
	// and retransmitted later, as a silent partition looks to TCP): the
	// sender learns nothing until its own timeouts fire.
	LinkBlackhole
)

func (m LinkMode) String() string {
	switch m {
	case LinkDrop:
		return "drop"
	case LinkBlackhole:
		return "blackhole"
	default:
		return "up"
	}
}

// Proxy is a fault-injecting TCP proxy in front of every node's cluster
// address. Node i advertises Proxy.Addr(i); the proxy forwards what it
// accepts there to the node's real listener (SetBackend). Nodes dial from
// distinct loopback source IPs (SourceIP), so the proxy knows both ends of
// every connection and can cut the link between a chosen pair, in both
// directions, including connections opened before the cut (raft keeps its
// connections open for as long as they work).
type Proxy struct {
	fronts []*front

	mu    sync.Mutex
	links map[[2]int]*link
}

// SourceIP is the loopback address node i's outgoing cluster connections
// leave from.
func SourceIP(i int) string { return fmt.Sprintf("127.0.0.%d", i+2) }

func nodeOfIP(ip net.IP) int {
	ip4 := ip.To4()
	if ip4 == nil || ip4[0] != 127 || ip4[1] != 0 || ip4[2] != 0 || ip4[3] < 2 {
		return -1
	}
	return int(ip4[3]) - 2
}

type front struct {
	idx int
	ln  net.Listener
	p   *Proxy

	mu      sync.Mutex
	backend string
}

type link struct {
	mode  LinkMode
	open  chan struct{} // closed while the link is up
	conns map[*pipe]struct{}
}

// NewProxy listens on 127.0.0.1:0 once per node; Close stops it.
func NewProxy(nodes int) (*Proxy, error) {
	p := &Proxy{links: map[[2]int]*link{}}
	for i := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			p.Close()
			return nil, err
		}
		f := &front{idx: i, ln: ln, p: p}
		p.fronts = append(p.fronts, f)
		go f.serve()
	}
	return p, nil
}

// Addr is the address node i advertises.
func (p *Proxy) Addr(i int) string { return p.fronts[i].ln.Addr().String() }

// SetBackend points node i's front at the node's real cluster listener
// ("" while the node is down: connections are then refused).
func (p *Proxy) SetBackend(i int, addr string) {
	f := p.fronts[i]
	f.mu.Lock()
	f.backend = addr
	f.mu.Unlock()
}

// Close stops accepting and closes every proxied connection.
func (p *Proxy) Close() {
	for _, f := range p.fronts {
		f.ln.Close()
	}
	p.mu.Lock()
	var all []*pipe
	for _, l := range p.links {
		for c := range l.conns {
			all = append(all, c)
		}
	}
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}

func linkKey(a, b int) [2]int {
	if a > b {
		a, b = b, a
	}
	return [2]int{a, b}
}

// linkLocked returns the link between a and b, creating it up.
func (p *Proxy) linkLocked(a, b int) *link {
	k := linkKey(a, b)
	l := p.links[k]
	if l == nil {
		l = &link{open: make(chan struct{}), conns: map[*pipe]struct{}{}}
		close(l.open)
		p.links[k] = l
	}
	return l
}

// Set puts the link between nodes a and b in mode, both directions.
func (p *Proxy) Set(a, b int, mode LinkMode) {
	p.mu.Lock()
	l := p.linkLocked(a, b)
	was := l.mode
	l.mode = mode
	var doomed []*pipe
	switch {
	case mode == LinkUp && was != LinkUp:
		close(l.open)
	case mode != LinkUp && was == LinkUp:
		l.open = make(chan struct{})
	}
	if mode == LinkDrop {
		for c := range l.conns {
			doomed = append(doomed, c)
		}
	}
	p.mu.Unlock()
	for _, c := range doomed {
		c.close()
	}
}

// Partition cuts every link between a node of side a and one of side b.
func (p *Proxy) Partition(a, b []int, mode LinkMode) {
	for _, x := range a {
		for _, y := range b {
			p.Set(x, y, mode)
		}
	}
}

// Heal brings every link up.
func (p *Proxy) Heal() {
	p.mu.Lock()
	var keys [][2]int
	for k := range p.links {
		keys = append(keys, k)
	}
	p.mu.Unlock()
	for _, k := range keys {
		p.Set(k[0], k[1], LinkUp)
	}
}

// Mode reports the state of the link between a and b.
func (p *Proxy) Mode(a, b int) LinkMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.linkLocked(a, b).mode
}

func (f *front) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go f.handle(c)
	}
}

func (f *front) handle(c net.Conn) {
	src := -1
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		src = nodeOfIP(ta.IP)
	}
	f.mu.Lock()
	backend := f.backend
	f.mu.Unlock()
	if backend == "" { // the node is down: refuse, as its port would
		c.Close()
		return
	}
	p := f.p
	p.mu.Lock()
	var l *link
	if src >= 0 && src != f.idx {
		l = p.linkLocked(src, f.idx)
		if l.mode == LinkDrop {
			p.mu.Unlock()
			c.Close()
			return
		}
	}
	p.mu.Unlock()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		c.Close()
		return
	}
	pp := &pipe{a: c, b: b, done: make(chan struct{})}
	if l != nil {
		p.mu.Lock()
		if l.mode == LinkDrop { // cut while we dialed
			p.mu.Unlock()
			pp.close()
			return
		}
		l.conns[pp] = struct{}{}
		p.mu.Unlock()
	}
	gate := func() bool {
		if l == nil {
			return true
		}
		for {
			p.mu.Lock()
			open := l.open
			p.mu.Unlock()
			select {
			case <-open:
				return true
			case <-pp.done:
				return false
			default:
			}
			select {
			case <-open:
			case <-pp.done:
				return false
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pp.copy(b, c, gate) }()
	go func() { defer wg.Done(); pp.copy(c, b, gate) }()
	wg.Wait()
	if l != nil {
		p.mu.Lock()
		delete(l.conns, pp)
		p.mu.Unlock()
	}
}

// pipe is one proxied connection: a (the dialer's side) and b (the node's).
type pipe struct {
	a, b net.Conn
	once sync.Once
	done chan struct{}
}

func (pp *pipe) close() {
	pp.once.Do(func() {
		close(pp.done)
		pp.a.Close()
		pp.b.Close()
	})
}

// copy forwards src to dst, holding each chunk until gate lets it pass;
// either side failing closes both.
func (pp *pipe) copy(dst, src net.Conn, gate func() bool) {
	defer pp.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !gate() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF or a failure: either ends the connection
			return
		}
	}
}
