// A Go program that leaks *os.File at known lines and handles files correctly at others. The
// tests find the lines through the markers in the comments (LEAK_GO_CREATE, LEAK_GO_OPEN,
// LEAK_GO_DIAL, OK_GO_CREATE, OK_GO_OPEN, OK_GO_DIAL).
//
// usage: goleak N [DELAY_MS] [LINGER_MS]
//
// waits DELAY_MS (and, with LEAKY_WAIT set, for a line on stdin), then N times: leaks one file from os.Create, creates and closes another,
// opens and closes a third; every 4th round leaks a file from os.Open. Then dials a local
// listener twice, leaking one connection and closing the other: net.Dial's frames between the
// socket() call and the caller take more than 2 KiB of stack. Prints "done" and waits LINGER_MS
// (or until killed when LINGER_MS is 0).
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Everything leaked stays referenced here, so no finalizer closes it.
var leaked []interface{}

//go:noinline
func leakCreate(dir string, i int) {
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("leak-%d.txt", i))) /* LEAK_GO_CREATE */
	if err != nil {
		panic(err)
	}
	f.WriteString("x")
	leaked = append(leaked, f)
}

//go:noinline
func leakOpen(path string) {
	f, err := os.Open(path) /* LEAK_GO_OPEN */
	if err != nil {
		panic(err)
	}
	leaked = append(leaked, f)
}

//go:noinline
func writeCorrectly(dir string) string {
	path := filepath.Join(dir, "config.txt")
	f, err := os.Create(path) /* OK_GO_CREATE */
	if err != nil {
		panic(err)
	}
	defer f.Close()
	f.WriteString("ok\n")
	return path
}

//go:noinline
func readCorrectly(path string) {
	f, err := os.Open(path) /* OK_GO_OPEN */
	if err != nil {
		panic(err)
	}
	buf := make([]byte, 16)
	f.Read(buf)
	f.Close()
}

//go:noinline
func leakDial(addr string) {
	c, err := net.Dial("tcp", addr) /* LEAK_GO_DIAL */
	if err != nil {
		panic(err)
	}
	leaked = append(leaked, c)
}

//go:noinline
func dialCorrectly(addr string) {
	c, err := net.Dial("tcp", addr) /* OK_GO_DIAL */
	if err != nil {
		panic(err)
	}
	c.Close()
}

func arg(i int, def int) int {
	if len(os.Args) > i {
		v, err := strconv.Atoi(os.Args[i])
		if err != nil {
			panic(err)
		}
		return v
	}
	return def
}

func main() {
	n := arg(1, 40)
	delay := arg(2, 0)
	linger := arg(3, 0)
	dir := os.Getenv("LEAKY_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	time.Sleep(time.Duration(delay) * time.Millisecond)
	if os.Getenv("LEAKY_WAIT") != "" {
		// Until a tracer has attached: the test sends a line.
		os.Stdin.Read(make([]byte, 64))
	}
	for i := 0; i < n; i++ {
		leakCreate(dir, i)
		path := writeCorrectly(dir)
		readCorrectly(path)
		if i%4 == 0 {
			leakOpen(path)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	leakDial(l.Addr().String())
	dialCorrectly(l.Addr().String())
	fmt.Println("done")
	if linger > 0 {
		time.Sleep(time.Duration(linger) * time.Millisecond)
	} else {
		// Sleep rather than block forever: a program whose goroutines all block is killed by
		// Go's deadlock detector.
		for {
			time.Sleep(time.Hour)
		}
	}
}
