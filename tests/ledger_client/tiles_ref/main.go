// Command tiles_ref prints the tiles of a transparency log as Go's
// golang.org/x/mod/sumdb/tlog computes them: the reference the Python tile
// tests compare ledger_client.tiles against (tests/ledger_client/test_tiles_independent.py).
//
// Build offline against Debian's golang-golang-x-mod-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o tiles_ref .
//
// Two modes:
//
//	tiles_ref tiles [SIZE...]
//	                  stdin: entries, each a big-endian uint32 length and its bytes.
//	                  stdout, for each SIZE (default: the number of entries):
//	                  "size SIZE", "root <hex>", then one line per tile of the tree
//	                  of the first SIZE entries, "<Go tile path> <hex of its hashes>",
//	                  only the widest (final) version of each partial tile.
//	tiles_ref parse   stdin: one Go tile path per line.
//	                  stdout per line: "ok L N W" or "bad".
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

func die(err error) {
	fmt.Fprintln(os.Stderr, "tiles_ref:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		die(fmt.Errorf("usage: tiles_ref tiles [SIZE...] | tiles_ref parse"))
	}
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	switch os.Args[1] {
	case "tiles":
		tiles(in, out, os.Args[2:])
	case "parse":
		parse(in, out)
	default:
		die(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}

func tiles(in *bufio.Reader, out *bufio.Writer, sizeArgs []string) {
	// Every stored hash of the tree, in tlog's StoredHashIndex order.
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		hs := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x < 0 || x >= int64(len(stored)) {
				return nil, fmt.Errorf("no stored hash %d", x)
			}
			hs[i] = stored[x]
		}
		return hs, nil
	})
	var n int64
	var prefix [4]byte
	for {
		if _, err := io.ReadFull(in, prefix[:]); err == io.EOF {
			break
		} else if err != nil {
			die(err)
		}
		entry := make([]byte, binary.BigEndian.Uint32(prefix[:]))
		if _, err := io.ReadFull(in, entry); err != nil {
			die(err)
		}
		if tlog.StoredHashIndex(0, n) != int64(len(stored)) {
			die(fmt.Errorf("stored hash count out of step at record %d", n))
		}
		hs, err := tlog.StoredHashes(n, entry, reader)
		if err != nil {
			die(err)
		}
		stored = append(stored, hs...)
		n++
	}
	if tlog.StoredHashCount(n) != int64(len(stored)) {
		die(fmt.Errorf("%d stored hashes for %d records", len(stored), n))
	}
	sizes := []int64{n}
	if len(sizeArgs) > 0 {
		sizes = sizes[:0]
		for _, a := range sizeArgs {
			s, err := strconv.ParseInt(a, 10, 64)
			if err != nil || s < 0 || s > n {
				die(fmt.Errorf("size %q is not 0-%d", a, n))
			}
			sizes = append(sizes, s)
		}
	}
	// The stored hashes of records below s do not depend on later records,
	// so one store answers for every size.
	for _, s := range sizes {
		printTiles(out, s, reader)
	}
}

func printTiles(out *bufio.Writer, n int64, reader tlog.HashReader) {
	fmt.Fprintf(out, "size %d\n", n)
	root, err := tlog.TreeHash(n, reader)
	if err != nil {
		die(err)
	}
	fmt.Fprintf(out, "root %x\n", root[:])
	// NewTiles lists a partial tile once per width from 1 up to its final
	// width; a tlog-tiles log serves only the final one.
	all := tlog.NewTiles(height, 0, n)
	for i, t := range all {
		if i+1 < len(all) && all[i+1].L == t.L && all[i+1].N == t.N {
			continue
		}
		data, err := tlog.ReadTileData(t, reader)
		if err != nil {
			die(err)
		}
		fmt.Fprintf(out, "%s %s\n", t.Path(), hex.EncodeToString(data))
	}
}

func parse(in *bufio.Reader, out *bufio.Writer) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		t, err := tlog.ParseTilePath(sc.Text())
		if err != nil || t.H != height {
			fmt.Fprintln(out, "bad")
			continue
		}
		fmt.Fprintf(out, "ok %d %d %d\n", t.L, t.N, t.W)
	}
	if err := sc.Err(); err != nil {
		die(err)
	}
}
