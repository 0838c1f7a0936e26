// godial: the cost of net/http client connections, one per request. It serves an upstream on
// 127.0.0.1 (every response says "Connection: close", so each request dials anew), prints
// "ready PID", waits for a line on stdin, then makes N requests one after the other with an
// http.Client (each body read and closed) and prints "ns_per_request X".
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "usage: godial N")
		os.Exit(2)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprintln(w, "hello")
	}))
	url := "http://" + l.Addr().String() + "/"
	client := &http.Client{}
	fmt.Printf("ready %d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	start := time.Now()
	for i := 0; i < n; i++ {
		resp, err := client.Get(url)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	fmt.Printf("ns_per_request %.0f\n", float64(time.Since(start).Nanoseconds())/float64(n))
}
