// A Go HTTP service whose handlers leak the connections net/http dials for them, each in
// another way: net/http dials in a goroutine of its own, so the line to name is in the
// goroutine that asked. The tests find the lines through the markers in the comments.
//
// usage: gohttp -upstream
//
//	an upstream HTTP server on 127.0.0.1 (a free port): / answers with "Connection: close"
//	(it closes its side after the response), /keep keeps the connection alive.
//
// usage: gohttp -upstream-addr HOST:PORT
//
//	the service, on 127.0.0.1 (a free port):
//	  /get      client.Get of the upstream's /, the body never closed;
//	  /do       client.Do of a request made first, the body never closed;
//	  /inlined  http.Get (inlined into the handler), the body never closed;
//	  /worker   a goroutine started for the request does the client.Get and never closes;
//	  /limited  a client with MaxConnsPerHost 1: a first response holds the connection and
//	            another goroutine closes it 0.2 s later; the handler's Get waits in the
//	            transport's queue meanwhile, and its dial is started by the goroutine that
//	            closes the first connection. The second body is never closed;
//	  /reuse    a keep-alive client: GET /keep, read and close (the connection goes back to
//	            the pool), then GET /keep again on the same connection, never closed;
//	  /file     opens this program's own file and never closes it;
//	  /pool     a database/sql pool of one connection (a driver whose connections are TCP
//	            connections to the upstream), opened for the request and never closed: the
//	            handler holds the first connection while another goroutine waits for one, then
//	            finds it broken; the pool drops it and dials the waiter's connection in its own
//	            goroutine (started by sql.OpenDB). That connection is never released;
//	  /ok       client.Get, the body read and closed.
//
// Both print "port N" on stdout once they accept connections, and serve until killed.
package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

var (
	upstream string

	// No timeout, the default transport: what the incident's service used.
	client = &http.Client{}
	// Its own transport: connections kept alive between requests.
	keepAlive = &http.Client{Transport: &http.Transport{}}

	mu     sync.Mutex
	leaked []interface{}
)

// keep keeps what leaked referenced (as a real service's caches and request logs keep them),
// so no finalizer closes it behind the test's back.
func keep(v interface{}) {
	mu.Lock()
	defer mu.Unlock()
	leaked = append(leaked, v)
}

func get(w http.ResponseWriter, r *http.Request) {
	resp, err := client.Get(upstream + "/") /* LEAK_GET */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	keep(resp)
	fmt.Fprintf(w, "upstream said %s\n", resp.Status)
}

func do(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequest("GET", upstream+"/", nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp, err := client.Do(req) /* LEAK_DO */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	keep(resp)
	fmt.Fprintf(w, "upstream said %s\n", resp.Status)
}

func inlined(w http.ResponseWriter, r *http.Request) {
	resp, err := http.Get(upstream + "/") /* LEAK_INLINED */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	keep(resp)
	fmt.Fprintf(w, "upstream said %s\n", resp.Status)
}

func fetch(done chan<- string) {
	resp, err := client.Get(upstream + "/") /* LEAK_WORKER */
	if err != nil {
		done <- err.Error()
		return
	}
	keep(resp)
	done <- "upstream said " + resp.Status
}

func worker(w http.ResponseWriter, r *http.Request) {
	done := make(chan string)
	go fetch(done)
	fmt.Fprintln(w, <-done)
}

func limited(w http.ResponseWriter, r *http.Request) {
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	holder, err := c.Get(upstream + "/") /* HOLDER */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		holder.Body.Close()
	}()
	resp, err := c.Get(upstream + "/") /* LEAK_LIMITED */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	keep(resp)
	fmt.Fprintf(w, "upstream said %s\n", resp.Status)
}

func reuse(w http.ResponseWriter, r *http.Request) {
	first, err := keepAlive.Get(upstream + "/keep") /* KEEP_FIRST */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	io.Copy(io.Discard, first.Body)
	first.Body.Close()
	// The transport puts the connection back in its pool right after the close, in a
	// goroutine of its own: leave it the time to.
	time.Sleep(100 * time.Millisecond)
	again, err := keepAlive.Get(upstream + "/keep") /* KEEP_AGAIN */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	keep(again)
	fmt.Fprintf(w, "upstream said %s\n", again.Status)
}

func file(w http.ResponseWriter, r *http.Request) {
	f, err := os.Open(os.Args[0]) /* LEAK_FILE */
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	keep(f)
	fmt.Fprintln(w, "opened")
}

// netDriver is a database/sql driver whose connections are TCP connections to the address
// given as the data source name: enough for sql.DB's pool to open, hand out and drop them.
type netDriver struct{}

type netConn struct{ c net.Conn }

func (netDriver) Open(addr string) (driver.Conn, error) {
	c, err := net.Dial("tcp", addr) /* POOL_DIAL */
	if err != nil {
		return nil, err
	}
	return &netConn{c}, nil
}

func (c *netConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("no statements") }
func (c *netConn) Close() error                        { return c.c.Close() }
func (c *netConn) Begin() (driver.Tx, error)           { return nil, errors.New("no transactions") }

// Ping finds every connection broken, as a driver does whose server went away.
func (c *netConn) Ping(context.Context) error { return driver.ErrBadConn }

func pool(w http.ResponseWriter, r *http.Request) {
	db, err := sql.Open("net", strings.TrimPrefix(upstream, "http://"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	keep(db)
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	first, err := db.Conn(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	got := make(chan error)
	go func() {
		second, err := db.Conn(ctx)
		if err == nil {
			keep(second)
		}
		got <- err
	}()
	for db.Stats().WaitCount == 0 {
		time.Sleep(time.Millisecond)
	}
	first.PingContext(ctx)
	if err := <-got; err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fmt.Fprintln(w, "opened a connection in the pool's goroutine")
}

func ok(w http.ResponseWriter, r *http.Request) {
	resp, err := client.Get(upstream + "/") /* OK_GET */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Fprintf(w, "upstream said %s\n", resp.Status)
}

func closing(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	fmt.Fprintln(w, "hello from upstream")
}

func keepAliveHandler(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintln(w, "hello again")
}

// serve listens on a free port of 127.0.0.1, says which, and serves until killed.
func serve(h http.Handler) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Printf("port %d\n", l.Addr().(*net.TCPAddr).Port)
	panic(http.Serve(l, h))
}

func main() {
	asUpstream := flag.Bool("upstream", false, "be the upstream server")
	addr := flag.String("upstream-addr", "", "the upstream's HOST:PORT")
	flag.Parse()
	mux := http.NewServeMux()
	if *asUpstream {
		mux.HandleFunc("/", closing)
		mux.HandleFunc("/keep", keepAliveHandler)
		serve(mux)
	}
	if *addr == "" {
		fmt.Fprintln(os.Stderr, "gohttp: -upstream or -upstream-addr HOST:PORT")
		os.Exit(2)
	}
	upstream = "http://" + *addr
	sql.Register("net", netDriver{})
	for path, h := range map[string]http.HandlerFunc{
		"/get": get, "/do": do, "/inlined": inlined, "/worker": worker,
		"/limited": limited, "/reuse": reuse, "/file": file, "/pool": pool, "/ok": ok,
	} {
		mux.HandleFunc(path, h)
	}
	serve(mux)
}
