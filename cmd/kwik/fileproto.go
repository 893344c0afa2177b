package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// The file protocol of `kwik serve` and `kwik get`, one logical stream per file. Every message
// is one line of ASCII (at most maxLine bytes with its '\n'):
//
//	client → primary      GET <offset> <name>\n        then the client closes its side
//	primary → client      OK <size> <sha256>\n         then bytes [offset, size) of the file
//	                      ERR <reason>\n               and the stream closes
//	primary → secondary   RANGE <offset> <n> <size> <name>\n   (a delegation's request)
//	secondary → client    bytes [offset, offset+n) of its replica, at the delegated offsets
//
// <name> is a slash-separated path relative to the served directory (it may contain spaces:
// it runs to the end of the line). A secondary whose replica does not have <size> bytes serves
// nothing, and the primary fills the range itself. <sha256> is the hex SHA-256 of the whole
// file (older primaries sent none): the client checks what it wrote against it, since a
// replica that has the right size but other bytes would otherwise go unnoticed.

const maxLine = 4096

type getRequest struct {
	offset int64
	name   string
}

func (r getRequest) String() string { return fmt.Sprintf("GET %d %s\n", r.offset, r.name) }

type rangeRequest struct {
	offset, n, size int64
	name            string
}

func (r rangeRequest) String() string {
	return fmt.Sprintf("RANGE %d %d %d %s\n", r.offset, r.n, r.size, r.name)
}

// readLine reads one protocol line (without its '\n') from r, never more than maxLine bytes
// and never a byte past the line: the file's bytes follow the primary's answer. Byte by byte,
// since a line is read once per stream.
func readLine(r io.Reader) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < maxLine {
		if _, err := io.ReadFull(r, b); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return "", errors.New("truncated line")
			}
			return "", err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
	return "", errors.New("line too long")
}

// fields splits line into a keyword, count integers and the rest (a name).
func fields(line, keyword string, count int) ([]int64, string, error) {
	rest, ok := strings.CutPrefix(line, keyword+" ")
	if !ok {
		return nil, "", fmt.Errorf("not a %s line", keyword)
	}
	nums := make([]int64, count)
	for i := range nums {
		var f string
		f, rest, _ = strings.Cut(rest, " ")
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil || v < 0 {
			return nil, "", fmt.Errorf("bad number %q in %s line", f, keyword)
		}
		nums[i] = v
	}
	return nums, rest, nil
}

// cleanName checks a requested name: relative, slash-separated, no "..", no empty parts.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\\\x00\n") || path.IsAbs(name) || path.Clean(name) != name ||
		name == ".." || strings.HasPrefix(name, "../") {
		return "", fmt.Errorf("bad file name %q", name)
	}
	return name, nil
}

func parseGet(line string) (getRequest, error) {
	nums, name, err := fields(line, "GET", 1)
	if err != nil {
		return getRequest{}, err
	}
	if name, err = cleanName(name); err != nil {
		return getRequest{}, err
	}
	return getRequest{offset: nums[0], name: name}, nil
}

func parseRange(line string) (rangeRequest, error) {
	nums, name, err := fields(line, "RANGE", 3)
	if err != nil {
		return rangeRequest{}, err
	}
	if name, err = cleanName(name); err != nil {
		return rangeRequest{}, err
	}
	r := rangeRequest{offset: nums[0], n: nums[1], size: nums[2], name: name}
	if r.n == 0 || r.offset > r.size || r.n > r.size-r.offset {
		return rangeRequest{}, fmt.Errorf("range [%d, +%d) outside a file of %d bytes", r.offset, r.n, r.size)
	}
	return r, nil
}

// parseResponse reads the primary's answer: the file's size and SHA-256 (nil if the primary
// sent none), or its error.
func parseResponse(line string) (int64, []byte, error) {
	if reason, ok := strings.CutPrefix(line, "ERR "); ok {
		return 0, nil, fmt.Errorf("server: %s", reason)
	}
	nums, rest, err := fields(line, "OK", 1)
	if err != nil {
		return 0, nil, fmt.Errorf("bad response %q", line)
	}
	if rest == "" && !strings.HasSuffix(line, " ") {
		return nums[0], nil, nil
	}
	sum, err := hex.DecodeString(rest)
	if err != nil || len(sum) != sha256.Size {
		return 0, nil, fmt.Errorf("bad response %q", line)
	}
	return nums[0], sum, nil
}
