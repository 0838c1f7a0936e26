// A Go HTTP service that reproduces a descriptor-leak incident: its HTTP client has no timeout
// and never closes response bodies, so the connections to the upstream pile up in CLOSE_WAIT
// once the upstream closes its side; its upload handler never closes the files it creates. The
// tests find the lines through the markers in the comments (LEAK_UPLOAD, LEAK_PROXY, OK_FILE).
//
// usage: gosvc -upstream
//
//	an upstream HTTP server on 127.0.0.1 (a free port) that answers every request with
//	"Connection: close", so it closes its side of each connection after the response.
//
// usage: gosvc -upstream-addr HOST:PORT -dir DIR
//
//	the service, on 127.0.0.1 (a free port):
//	  /upload  writes the request body to a new file in DIR and never closes it;
//	  /proxy   GETs the upstream's / with an http.Client without timeout and never closes the
//	           response body;
//	  /ok      creates a file in DIR, writes it and closes it.
//
// Both print "port N" on stdout once they accept connections, and serve until killed.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
)

var (
	dir          string
	upstreamAddr string

	// No timeout, the default transport: what the incident's service used.
	client = &http.Client{}

	mu     sync.Mutex
	leaked []interface{}
	files  int
)

// keep keeps what leaked referenced (as a real service's caches and request logs keep them),
// so no finalizer closes it behind the test's back.
func keep(v interface{}) {
	mu.Lock()
	defer mu.Unlock()
	leaked = append(leaked, v)
}

// newPath names a new file in dir: format with a number no other file got.
func newPath(format string) string {
	mu.Lock()
	defer mu.Unlock()
	files++
	return filepath.Join(dir, fmt.Sprintf(format, files))
}

func upload(w http.ResponseWriter, r *http.Request) {
	name := newPath("upload-%d.bin")
	f, err := os.Create(name) /* LEAK_UPLOAD */
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	n, err := io.Copy(f, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	keep(f)
	fmt.Fprintf(w, "stored %d bytes in %s\n", n, name)
}

func proxy(w http.ResponseWriter, r *http.Request) {
	resp, err := client.Get("http://" + upstreamAddr + "/") /* LEAK_PROXY */
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	// The body is never read nor closed: the connection stays with the response.
	keep(resp)
	fmt.Fprintf(w, "upstream said %s\n", resp.Status)
}

func ok(w http.ResponseWriter, r *http.Request) {
	name := newPath("ok-%d.txt")
	f, err := os.Create(name) /* OK_FILE */
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, err = f.WriteString("fine\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "ok")
}

func upstreamHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	fmt.Fprintln(w, "hello from upstream")
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
	flag.StringVar(&upstreamAddr, "upstream-addr", "", "the upstream's HOST:PORT")
	flag.StringVar(&dir, "dir", os.TempDir(), "where uploads and other files go")
	flag.Parse()
	if *asUpstream {
		serve(http.HandlerFunc(upstreamHandler))
	}
	if upstreamAddr == "" {
		fmt.Fprintln(os.Stderr, "gosvc: -upstream or -upstream-addr HOST:PORT")
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/upload", upload)
	mux.HandleFunc("/proxy", proxy)
	mux.HandleFunc("/ok", ok)
	serve(mux)
}
