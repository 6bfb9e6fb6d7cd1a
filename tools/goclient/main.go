// Command tokenvend-goclient is a Go caller of tokenvend built on stubs that protoc-gen-go and
// protoc-gen-go-grpc generate from proto/ (into gen/, git-ignored; see buf.gen.go.yaml).
// scripts/tools.ts generates them and builds this into .cache/go/bin/tokenvend-goclient.
//
//	tokenvend-goclient calls ADDRESS   one call of each kind, answers as one JSON object on
//	                                   stdout (test/go-client.test.ts checks every value)
//	tokenvend-goclient watch           the WatchToken benchmark client of bench/watch.ts:
//	                                   settings in $BENCH_WATCH_CLIENT, JSON-line commands on
//	                                   stdin, one JSON-line reply each on stdout
package main

import (
	"fmt"
	"os"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "calls":
		err = runCalls(os.Args[2])
	case len(os.Args) >= 2 && os.Args[1] == "watch":
		err = runWatch(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: tokenvend-goclient calls ADDRESS | watch [-cpuprofile FILE]")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tokenvend-goclient: %v\n", err)
		os.Exit(1)
	}
}

// codeName is a status code's canonical name (NOT_FOUND), as grpc-js and grpcio spell it;
// codes.Code.String() gives Go's NotFound.
func codeName(c codes.Code) string {
	return code.Code(c).String()
}
